"""The offline runner's scheduling, on a small compiled spec whose tasks are real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.orchestration.vertex_offline import OfflineRun, OfflineRunError

# Each task records when it started and ended, sleeping in between; exit code from argv.
TASK = ("import json, sys, time; start = time.time(); time.sleep(float(sys.argv[2])); "
        "open(sys.argv[1], 'w').write(json.dumps([start, time.time()])); "
        "sys.exit(int(sys.argv[3]))")


def write_job(tmp_path: Path, tasks: dict[str, tuple[list[str], float, int]]) -> Path:
    """A PipelineJob of container tasks: name -> (upstream tasks, seconds, exit code)."""
    executors, components, dag = {}, {}, {}
    for name, (upstream, seconds, code) in tasks.items():
        executors[f"exec-{name}"] = {"container": {
            "command": ["python", "-c", TASK],
            "args": [str(tmp_path / f"{name}.json"), str(seconds), str(code)]}}
        components[f"comp-{name}"] = {"executorLabel": f"exec-{name}"}
        dag[name] = {"componentRef": {"name": f"comp-{name}"}, "dependentTasks": upstream}
    job = {"pipelineSpec": {"pipelineInfo": {"name": "scheduling"}, "root": {"dag": {
        "tasks": dag}}, "components": components, "deploymentSpec": {"executors": executors}},
        "runtimeConfig": {"gcsOutputDirectory": "gs://bucket/root"}}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path


def span(tmp_path: Path, name: str) -> tuple[float, float]:
    start, end = json.loads((tmp_path / f"{name}.json").read_text())
    return start, end


def test_ready_tasks_run_side_by_side_and_a_join_waits_for_both(tmp_path):
    job = write_job(tmp_path, {"a": ([], 2.0, 0), "b": ([], 2.0, 0), "c": (["a", "b"], 0, 0)})
    run = OfflineRun(job, tmp_path / "offline", parallelism=2, echo=lambda line: None)
    assert run.run()
    (a_start, a_end), (b_start, b_end) = span(tmp_path, "a"), span(tmp_path, "b")
    assert a_start < b_end and b_start < a_end, "a and b did not overlap"
    assert span(tmp_path, "c")[0] >= max(a_end, b_end)
    assert [r.state for r in run.results] == ["SUCCEEDED"] * 3


def test_one_at_a_time_when_parallelism_is_one(tmp_path):
    job = write_job(tmp_path, {"a": ([], 1.0, 0), "b": ([], 1.0, 0)})
    assert OfflineRun(job, tmp_path / "offline", parallelism=1, echo=lambda line: None).run()
    (a_start, a_end), (b_start, b_end) = span(tmp_path, "a"), span(tmp_path, "b")
    assert a_end <= b_start or b_end <= a_start


def test_a_failure_lets_running_tasks_finish_and_skips_what_depends_on_it(tmp_path):
    job = write_job(tmp_path, {"a": ([], 0.1, 1), "b": ([], 2.0, 0), "c": (["a"], 0, 0),
                               "d": (["b"], 0, 0)})
    lines: list[str] = []
    run = OfflineRun(job, tmp_path / "offline", parallelism=2, echo=lines.append)
    assert not run.run()
    states = {r.name: r.state for r in run.results}
    assert states == {"a": "FAILED", "b": "SUCCEEDED", "c": "SKIPPED", "d": "SKIPPED"}
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "d.json").exists()
    assert any("task a exited 1" in line for line in lines)
    assert any("d" in line and "skipped (upstream a failed)" in line for line in lines)
    record = json.loads(next((tmp_path / "offline" / "runs").glob("*.json")).read_text())
    assert {t["name"]: t["state"] for t in record["tasks"]} == states


def test_a_cycle_and_a_parallelism_below_one_are_refused(tmp_path):
    job = write_job(tmp_path, {"a": (["b"], 0, 0), "b": (["a"], 0, 0)})
    with pytest.raises(OfflineRunError, match="cycle"):
        OfflineRun(job, tmp_path / "offline", echo=lambda line: None).run()
    with pytest.raises(OfflineRunError, match="parallelism must be at least 1"):
        OfflineRun(job, tmp_path / "offline", parallelism=0)
