"""The compiled Vertex PipelineJob, run offline through TFX's own Vertex code.

Every task runs TFX's container entrypoint (and ExampleGen's driver) as a subprocess on the
ExecutorInput Vertex would build; TFX's Vertex Trainer, Tuner and Pusher executors run as on
Vertex, with only the API clients at the network boundary replaced (CustomJobs become local
processes with TF_CONFIG on loopback, the endpoint a local registry). Two runs share one
offline root, as two Vertex runs share a project's metadata store, and ingest two spans of a
span layout: the second trains on a window of both and checks drift against the first.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tfx.dsl.components.base import base_executor

import vertex_runner
from data.bundled import first_rows
from settings.layout import PROJECT_ROOT

ROOT = PROJECT_ROOT
FAST = ["--train-steps", "60", "--min-auc", "0.5", "--warmup-requests", "4",
        "--log-level", "WARNING", "--input-pattern", "span-{SPAN}/*", "--training-spans", "2"]
SPAN_ROWS = 2500


def run_offline(root: Path, data: Path, *flags: str) -> tuple[int, str]:
    command = [sys.executable, "vertex_runner.py", "--offline", "--offline-root", str(root),
               "--offline-data", str(data), "--output", str(root / "job.json"), *FAST, *flags]
    (root / "tmp").mkdir(exist_ok=True)  # the tasks' temporary files, to look at after
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=2400,
                          env={**os.environ, "TMPDIR": str(root / "tmp")})
    return done.returncode, done.stdout + done.stderr


def newest_record(root: Path) -> dict:
    runs = sorted((root / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def write_span(folder: Path, span: int) -> None:
    """Span N holds the bundled rows N-1 spans in: the data a day later."""
    rows = first_rows(SPAN_ROWS * span)[-SPAN_ROWS:]
    (folder / f"span-{span}").mkdir()
    with (folder / f"span-{span}" / "data.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_span(folder, 1)
    return folder


@pytest.fixture(scope="module")
def first_run(sample, tmp_path_factory):
    """The default Vertex DAG on span 1 of a span layout (so with the drift check), with
    tuning (2 parallel trials), 2 training replicas and the endpoint Pusher: the first run of
    a project, so no baseline model and no previous span. The training worker is preempted
    after its first backup, as a Spot VM is reclaimed."""
    root = tmp_path_factory.mktemp("offline")
    code, output = run_offline(root, sample, "--enable-tuning", "--tuner-trials", "2",
                               "--tuner-steps", "20", "--training-workers", "1",
                               "--serving-endpoint", "taxi-endpoint",
                               "--backup-every-steps", "20", "--offline-preempt", "workerpool1-0")
    return root, code, output, newest_record(root)


def test_the_default_vertex_dag_runs_to_a_blessed_model_on_the_endpoint(first_run):
    root, code, output, record = first_run
    assert code == 0, output[-5000:]
    states = {t["name"]: t["state"] for t in record["tasks"]}
    assert set(states.values()) == {"SUCCEEDED"}, states
    for task in ("ExampleGen", "Tuner", "Trainer", "Evaluator", "SafeToServe", "Pusher",
                 "RunReport"):
        assert task in states
    assert "blessed: yes (no baseline: first blessed model)" in output
    # As on Vertex, the image holds TFX: no Beam task built an sdist of it.
    assert not list((root / "tmp").glob("*/build/tfx/dist/*")), "a task built a TFX sdist"
    endpoints = json.loads((root / "endpoints.json").read_text())
    (endpoint,) = endpoints.values()
    assert endpoint["display_name"] == "taxi-endpoint"
    assert list(endpoint["traffic_split"].values()) == [100]
    # The custom artifact type round-trips through the entrypoint: the report was written.
    (report,) = record["outputs"]["RunReport"]["report"]
    assert report["type"]["instanceSchema"].startswith("title: pipeline.RunReport")
    assert (Path(report["uri"]) / "report.html").stat().st_size > 10_000
    (window,) = record["outputs"]["SpanWindow"]["window"]
    assert json.loads((Path(window["uri"]) / "sources.json").read_text()).keys() == {"train_0"}
    (drift,) = record["outputs"]["DriftCheck"]["drift"]
    assert json.loads((Path(drift["uri"]) / "drift.json").read_text())["baseline_span"] is None


def test_training_ran_as_a_two_replica_vertex_job_and_only_the_chief_exported(first_run):
    root, code, output, record = first_run
    assert code == 0, output[-3000:]
    (run,) = record["outputs"]["Trainer"]["model_run"]
    history = json.loads((Path(run["uri"]) / "history.json").read_text())
    assert history["distribution"]["strategy"] == "multi_worker"
    assert history["distribution"]["replicas"] == 2
    (model,) = record["outputs"]["Trainer"]["model"]
    exported = list(Path(model["uri"]).rglob("saved_model.pb"))
    assert len(exported) == 1 and "scratch" not in str(exported[0])
    jobs = {p.parent.name: p.name for p in (root / "jobs").glob("*/workerpool*.log")}
    logs = sorted(p.name for p in (root / "jobs").glob("*/workerpool*.log"))
    # One job for the Tuner (2 parallel trials), one for the Trainer and one for the Refit
    # (chief + 1 worker each).
    assert len(jobs) == 3 and logs.count("workerpool0-0.log") == 3
    assert logs.count("workerpool1-0.log") == 3
    # The training worker was preempted after a backup (the Trainer's and the Refit's);
    # under multi-worker training the job restarts every replica
    # (restart_job_on_worker_restart), which resume from the backup, once.
    assert logs.count("workerpool0-0.restart-1.log") == logs.count(
        "workerpool1-0.restart-1.log") == 2
    assert "workerpool0-0.restart-2.log" not in logs
    assert history["steps"] == 60 and 20 <= history["resumed_from_step"] < 60
    # The Refit: the same recipe on every row of the window, at the same steps per row.
    (refit_run,) = record["outputs"]["Refit"]["model_run"]
    refit = json.loads((Path(refit_run["uri"]) / "history.json").read_text())
    assert refit["refit"]["rows"] == {"recipe": 1875, "added": 625, "all": SPAN_ROWS}
    assert refit["steps"] == 80 and 20 <= refit["resumed_from_step"] < 80
    assert refit["distribution"]["replicas"] == 2
    (best,) = record["outputs"]["Tuner"]["best_hyperparameters"]
    assert Path(best["uri"]).exists()


SECOND = ("--serving-endpoint", "taxi-endpoint", "--drift-action", "warn", "--max-auc-drop",
          "0.3", "--no-safe-to-serve", "--no-report-in-pipeline")


@pytest.fixture(scope="module")
def second_run(first_run, sample):
    """The next day's run: span 2 has landed."""
    root, code, output, _ = first_run
    assert code == 0, output[-3000:]
    write_span(sample, 2)
    code, output = run_offline(root, sample, *SECOND)
    return code, output, newest_record(root)


def test_a_second_run_on_the_next_span_trains_on_both_and_judges_against_the_first_model(
        first_run, second_run):
    root, _, _, first = first_run
    code, output, second = second_run
    assert code == 0, output[-5000:]
    (model,) = first["outputs"]["Trainer"]["model"]
    (resolved,) = second["outputs"]["latest_blessed_model_resolver-model-resolver"]["model"]
    assert resolved["name"] == model["name"] and resolved["uri"] == model["uri"]
    (blessing,) = second["outputs"]["Evaluator"]["blessing"]
    assert blessing["metadata"]["baseline_model_id"] == model["name"]
    assert blessing["metadata"]["blessed"] == 1
    # The new model took all the traffic, so the first one was undeployed: one model left.
    (endpoint,) = json.loads((root / "endpoints.json").read_text()).values()
    (deployed,) = endpoint["deployed_models"]
    (pushed,) = second["outputs"]["Pusher"]["pushed_model"]
    assert deployed["artifact_uri"] == pushed["uri"]
    # The window: span 2 (this run's) and span 1 (the first run's, from the span catalog).
    (examples,) = first["outputs"]["SpanExamples"]["spanned"]
    (window,) = second["outputs"]["SpanWindow"]["window"]
    sources = json.loads((Path(window["uri"]) / "sources.json").read_text())
    assert {k: v["span"] for k, v in sources.items()} == {"train_0": 2, "train_1": 1}
    assert sources["train_1"]["uri"] == examples["uri"]
    assert list((Path(window["uri"]) / "Split-train_1").iterdir())
    # Drift: this span's statistics against the first run's, every feature measured.
    (drift,) = second["outputs"]["DriftCheck"]["drift"]
    measured = json.loads((Path(drift["uri"]) / "drift.json").read_text())
    assert measured["span"] == 2 and measured["baseline_span"] == 1
    assert len(measured["features"]) >= 5


def test_a_mark_made_after_a_run_reaches_its_rerun_with_the_job_cache_on(first_run,
                                                                          second_run, sample):
    """The same job again on the same data, Vertex's step cache on (as compiled): the tasks
    whose inputs did not change are served from the cache (ExampleGen), but SpanExamples and
    SpanWindow read the marks when they run, so a mark made since leaves its rows out of the
    rerun's span and window (they were served from the cache with the rows in)."""
    import datetime
    import re

    from pipeline.components import contamination
    from tools import marks as marks_command

    root = first_run[0]
    code, output, before = second_run
    assert code == 0, output[-3000:]
    (spanned,) = before["outputs"]["SpanExamples"]["spanned"]
    assert contamination.read(spanned["uri"]) == {}  # no mark yet
    span_rows = first_rows(SPAN_ROWS * 2)[-SPAN_ROWS:]
    times = sorted(int(r["trip_start_timestamp"]) for r in span_rows)
    start, end = times[len(times) // 4], times[len(times) // 2]
    expected = sum(start <= t < end for t in times)
    # The control folder the compiled job reads, as a person marks it (gs:// offline).
    control = re.search(r"gs://([^\"\\]*/control/[^\"\\]*)", (root / "job.json").read_text())
    assert control, "the compiled job names no control folder"

    def iso(t: int) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()

    assert marks_command.main(["--control-dir", str(root / "gcs" / control[1]), "add",
                               "--from", iso(start), "--to", iso(end),
                               "--reason", "meter fault"]) == 0
    code, output = run_offline(root, sample, *SECOND)
    assert code == 0, output[-5000:]
    after = newest_record(root)
    assert any("ExampleGen" in line and "cached" in line for line in output.splitlines()), \
        output[-3000:]
    (spanned,) = after["outputs"]["SpanExamples"]["spanned"]
    (window,) = after["outputs"]["SpanWindow"]["window"]
    assert contamination.read(spanned["uri"])["rows"] == expected > 0
    assert contamination.read(window["uri"])["rows"] >= expected


# ---------------------------------------------------------------- the CustomJob boundary


class EnvRecorder(base_executor.BaseExecutor):
    """Stands in for a trainer in a CustomJob replica: records what Vertex gives it."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 - TFX's name
        task = json.loads(os.environ["CLUSTER_SPEC"])["task"]
        path = Path(exec_properties["out"]) / f"{task['type']}-{task['index']}.json"
        path.write_text(json.dumps({k: os.environ[k] for k in ("CLUSTER_SPEC", "TF_CONFIG")}))


LAUNCH = """
import json, sys
from tfx.extensions.google_cloud_ai_platform import runner
job = json.loads(sys.argv[1])
try:
    runner.start_cloud_training({}, {}, {"out": sys.argv[2]}, "test_vertex_offline.EnvRecorder",
                                job, None, enable_vertex=True, vertex_region="us-central1")
except Exception as e:
    print(f"{type(e).__name__}: {e}")
    sys.exit(1)
"""


class BacksUpThenTrains(base_executor.BaseExecutor):
    """Stands in for a training replica that backs up: counts its starts, says it backed
    up (the line the boundary preempts after), trains a few seconds."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 - TFX's name
        task = json.loads(os.environ["CLUSTER_SPEC"])["task"]
        out = Path(exec_properties["out"])
        with (out / f"{task['type']}-{task['index']}").open("a") as f:
            f.write("started\n")
        # As in real multi-worker training, nothing is backed up before the whole cluster is
        # up: a worker waits (bounded) for the chief's start, however slowly it imports.
        deadline = time.monotonic() + 120
        while task["type"] != "workerpool0" and time.monotonic() < deadline and not any(
                out.glob("workerpool0-*")):
            time.sleep(0.2)
        print("training state backed up at step 20", flush=True)
        time.sleep(6)


def launch(job: dict, out: Path, root: Path, executor: str = "EnvRecorder",
           env: dict | None = None) -> subprocess.CompletedProcess:
    """TFX's own Vertex training launcher, in a process where the boundary is installed."""
    from pipeline.orchestration import image_tree, vertex_boundary

    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", vertex_boundary.ROOT_ENV: str(root),
           "PYTHONPATH": os.pathsep.join([str(image_tree.BOUNDARY_DIR), str(ROOT),
                                          str(ROOT / "tests")]), **(env or {})}
    return subprocess.run([sys.executable, "-c", LAUNCH.replace("EnvRecorder", executor),
                           json.dumps(job), str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def pool(replicas: int, image: str = "img") -> dict:
    return {"machine_spec": {"machine_type": "n1-standard-4"}, "replica_count": replicas,
            "container_spec": {"image_uri": image}}


def test_every_replica_gets_the_cluster_vertex_describes(tmp_path):
    job = {"project": "p", "job_spec": {"worker_pool_specs": [pool(1), pool(2), pool(1)]}}
    done = launch(job, tmp_path, tmp_path / "offline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(seen) == ["workerpool0-0", "workerpool1-0", "workerpool1-1", "workerpool2-0"]
    tf_config = json.loads(seen["workerpool1-1"]["TF_CONFIG"])
    assert tf_config["task"] == {"type": "worker", "index": 1}
    assert [len(tf_config["cluster"][k]) for k in ("chief", "worker", "ps")] == [1, 2, 1]
    addresses = [a for v in tf_config["cluster"].values() for a in v]
    assert all(a.startswith("127.0.0.1:") for a in addresses) and len(set(addresses)) == 4


@pytest.mark.parametrize("restart, started", [
    ("auto", {"workerpool0-0": 2, "workerpool1-0": 2}),  # multi-worker: every replica again
    ("no", {"workerpool0-0": 1, "workerpool1-0": 2}),  # the lost one alone
])
def test_spot_and_restart_settings_reach_the_job_and_a_preempted_replica_restarts(
        tmp_path, restart, started):
    """The Trainer's job as vertex_runner compiles it, launched by TFX's own Vertex
    training client: the scheduling reaches the CustomJob the API receives, and a replica
    killed after its backup is started again (with every other one, when the job says so)."""
    from pipeline.orchestration import vertex_boundary

    compiled = tmp_path / "job.json"
    assert vertex_runner.main([
        "--gcp-project", "p", "--gcp-region", "us-central1", "--image", "img:1",
        "--output-root", "gs://bucket/taxi", "--data-root", "gs://bucket/data",
        "--training-spot",
        "--training-workers", "1", "--training-restart-job", restart,
        "--training-timeout-hours", "0.5", "--output", str(compiled)]) == 0
    tasks = json.loads(compiled.read_text())["pipelineSpec"]["root"]["dag"]["tasks"]
    custom = json.loads(tasks["Trainer"]["inputs"]["parameters"]["custom_config"]
                        ["runtimeValue"]["constantValue"]["stringValue"])
    assert custom["backup_root"].startswith("gs://bucket/taxi/pipelines/")  # PIPELINE_ROOT
    assert custom["backup_root"].endswith("/Trainer/backups")
    assert custom["backup_every_steps"] == 100
    root = tmp_path / "offline"
    done = launch(custom["ai_platform_training_args"], tmp_path, root, "BacksUpThenTrains",
                  {vertex_boundary.PREEMPT_ENV: "workerpool1-0"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (job,) = (root / "jobs").glob("*/custom_job.json")
    scheduling = json.loads(job.read_text())["job_spec"]["scheduling"]
    assert scheduling == {"strategy": "SPOT", "timeout": "1800s",
                          **({"restart_job_on_worker_restart": True}
                             if restart == "auto" else {})}
    assert {p.name: len(p.read_text().splitlines())
            for p in tmp_path.glob("workerpool*")} == started
    assert "preempted (SIGKILL) after its first backup" in done.stderr


@pytest.mark.parametrize("pools, message", [
    ([pool(2)], "worker pool 0 has replica_count 2; Vertex reserves it for exactly one"),
    ([pool(1), pool(1, image="")], "worker pool 1 has an empty container_spec.image_uri"),
    ([pool(1), pool(0)], "worker pool 1 has replica_count 0"),
])
def test_job_shapes_vertex_refuses_are_refused(pools, message, tmp_path):
    job = {"project": "p", "job_spec": {"worker_pool_specs": pools}}
    done = launch(job, tmp_path, tmp_path / "offline")
    assert done.returncode == 1
    assert "InvalidArgument" in done.stdout and message in done.stdout


# ---------------------------------------------------------------- the same DAG for Kubeflow


def test_the_kubeflow_target_runs_without_resolvers_or_hooks_against_the_served_model(
        first_run, sample):
    """As open-source Kubeflow Pipelines runs it: no ExampleGen driver hook, no resolver
    task; the model in the serving folder (here the endpoint's) is baseline and warm start."""
    root, code, output, first = first_run
    assert code == 0, output[-3000:]
    (pushed,) = first["outputs"]["Pusher"]["pushed_model"]
    serving = root / "gcs" / "offline-bucket" / "taxi" / "serving" / "taxi-big-tipper"
    shutil.copytree(pushed["uri"], serving / "1700000000")
    code, output = run_offline(root, sample, "--target", "kubeflow", "--input-pattern",
                               "span-1/*", "--warm-start", "--max-auc-drop", "0.3",
                               "--no-safe-to-serve", "--no-report-in-pipeline")
    assert code == 0, output[-5000:]
    assert "offline kubeflow run" in output and "ExampleGen.driver" not in output
    record = newest_record(root)
    assert not any("resolver" in t["name"] for t in record["tasks"])
    (served,) = record["outputs"]["ServedModel"]["model"]
    assert served["metadata"]["found"] == 1
    assert served["metadata"]["served_version"] == "1700000000"
    (run,) = record["outputs"]["Trainer"]["model_run"]
    assert json.loads((Path(run["uri"]) / "history.json").read_text())["warm_start"]
    (blessing,) = record["outputs"]["Evaluator"]["blessing"]
    assert blessing["metadata"]["blessed"] == 1
    assert blessing["metadata"]["baseline_model_id"]  # judged against the served model
    (push,) = record["outputs"]["Pusher"]["pushed_model"]
    assert push["metadata"]["pushed"] == 1
    versions = sorted(p.name for p in serving.iterdir())
    assert len(versions) == 2 and versions[0] == "1700000000"
