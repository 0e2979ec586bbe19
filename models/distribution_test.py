"""Strategy selection, and the Trainer's run_fn under real clusters on loopback: worker
processes with TF_CONFIG on free 127.0.0.1 ports, each bounded in time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from models import distribution as D
from models import local_cluster as C
from models.sample_transform import raw_rows_auc as auc

STEPS, BATCH, SEED = 120, 128, 7
PROCESS_TIMEOUT = 420


# ---------------------------------------------------------------- choosing


def cluster(chief=1, workers=0, ps=0, task=("chief", 0)) -> dict:
    spec = {"chief": [f"127.0.0.1:{1000 + i}" for i in range(chief)]}
    if workers:
        spec["worker"] = [f"127.0.0.1:{2000 + i}" for i in range(workers)]
    if ps:
        spec["ps"] = [f"127.0.0.1:{3000 + i}" for i in range(ps)]
    return {"cluster": spec, "task": {"type": task[0], "index": task[1]}}


def test_auto_reads_the_cluster_then_the_local_gpus():
    assert D.plan("auto", {}, gpus=0)[0] == "none"
    assert D.plan("auto", {}, gpus=2) == ("mirrored", "2 local GPUs")
    assert D.plan("auto", cluster(), gpus=0)[0] == "none"  # Vertex's single replica
    assert D.plan("auto", cluster(workers=1), gpus=0) == ("multi_worker", "TF_CONFIG has 2 workers")
    assert D.plan("auto", cluster(workers=2, ps=1), gpus=4)[0] == "parameter_server"


def test_impossible_combinations_are_refused_with_what_to_set():
    with pytest.raises(D.DistributionError, match="--training-workers N"):
        D.plan("multi_worker", {}, gpus=0)
    with pytest.raises(D.DistributionError, match="--training-parameter-servers"):
        D.plan("parameter_server", cluster(workers=2), gpus=0)
    with pytest.raises(D.DistributionError, match="every one would train its own model"):
        D.plan("none", cluster(workers=1), gpus=0)
    with pytest.raises(D.DistributionError, match="TAXI_DISTRIBUTION"):
        D.plan("horovod", {}, gpus=0)


def test_only_the_chief_writes_outputs():
    chief = D.Distribution("multi_worker", "", tf_config=cluster(workers=1))
    worker = D.Distribution("multi_worker", "", task_type="worker", task_index=0,
                            tf_config=cluster(workers=1))
    assert chief.is_chief and not worker.is_chief
    # Without a chief task, worker 0 is the chief (TF's own convention).
    no_chief = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert D.Distribution("multi_worker", "", task_type="worker", tf_config=no_chief).is_chief
    ps = D.Distribution("parameter_server", "", task_type="ps", tf_config=cluster(ps=1))
    assert ps.serves_only and not ps.is_chief


# ---------------------------------------------------------------- training for real


def finish(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    C.finish(processes, logs, PROCESS_TIMEOUT)


def trainer_args(transform: Path, out: Path, distribution: str, raw: bool = False,
                 holdout: float = 0.0) -> dict:
    return C.trainer_args(transform, out, STEPS, BATCH, SEED, distribution, raw=raw,
                          holdout=holdout)


@pytest.fixture(scope="module")
def single_process(bundled_transform, tmp_path_factory):
    transform, held_out = bundled_transform
    out = tmp_path_factory.mktemp("single")
    finish([C.start(trainer_args(transform, out, "none"), log=out / "log")], [out / "log"])
    return auc(out / "model", held_out)


def history(out: Path) -> dict:
    return json.loads((out / "run" / "history.json").read_text())


def test_two_workers_train_one_model_and_only_the_chief_exports_it(
        bundled_transform, single_process, tmp_path):
    """On raw rows, each worker running the Transform graph in its input pipeline, as the
    local pipeline trains (the single process it is compared with read the written rows)."""
    transform, held_out = bundled_transform
    spec = C.cluster_spec(workers=2)
    args = trainer_args(transform, tmp_path, "auto", raw=True, holdout=0.1)
    logs = [tmp_path / "chief.log", tmp_path / "worker.log"]
    processes = [C.start(args, {"cluster": spec, "task": {"type": "chief", "index": 0}},
                       log=logs[0]),
                 C.start(args, {"cluster": spec, "task": {"type": "worker", "index": 0}},
                       log=logs[1])]
    finish(processes, logs)
    assert (tmp_path / "model" / "saved_model.pb").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "scratch" in p.name) == []
    record = history(tmp_path)["distribution"]
    assert (record["strategy"], record["replicas"]) == ("multi_worker", 2)
    # within noise of one process (which trained on every row; here 10% are held out)
    assert abs(auc(tmp_path / "model", held_out) - single_process) <= 0.015
    # The chief alone scores the rows every replica held out of training.
    in_time = history(tmp_path)["in_time_holdout"]
    assert in_time["share"] == 0.1 and 150 < in_time["rows"] < 330 and in_time["auc"] > 0.8


def test_mirrored_over_two_logical_cpus_matches_one_device(
        bundled_transform, single_process, tmp_path):
    transform, held_out = bundled_transform
    log = tmp_path / "log"
    finish([C.start(trainer_args(transform, tmp_path, "mirrored"),
                  env={D.LOGICAL_CPUS_ENV: "2"}, log=log)], [log])
    record = history(tmp_path)["distribution"]
    assert (record["strategy"], record["replicas"]) == ("mirrored", 2)
    assert abs(auc(tmp_path / "model", held_out) - single_process) <= 0.01


def test_a_peer_that_never_arrives_ends_the_job_with_an_error(bundled_transform, tmp_path):
    transform, _ = bundled_transform
    spec = C.cluster_spec(workers=2)
    log = tmp_path / "chief.log"
    process = C.start(trainer_args(transform, tmp_path, "multi_worker"),
                    {"cluster": spec, "task": {"type": "chief", "index": 0}},
                    env={D.PEER_TIMEOUT_ENV: "20"}, log=log)
    try:
        code = process.wait(PROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert code != 0
    assert not (tmp_path / "model").exists()
    assert "did not join within 20 s" in log.read_text()


def test_parameter_servers_with_two_workers_train_a_model_that_answers_raw_rows(
        bundled_transform, single_process, tmp_path):
    """Variables on one server, steps run by two workers, coordinated by the chief; the
    workers and the server are stopped once the chief has exported."""
    transform, held_out = bundled_transform
    C.run(trainer_args(transform, tmp_path, "auto", holdout=0.1),
          C.cluster_spec(workers=2, servers=1), tmp_path, timeout=PROCESS_TIMEOUT)
    assert history(tmp_path)["distribution"]["strategy"] == "parameter_server"
    assert history(tmp_path)["in_time_holdout"]["auc"] > 0.8
    assert auc(tmp_path / "model", held_out) >= single_process - 0.03
