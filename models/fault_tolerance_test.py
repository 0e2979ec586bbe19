"""Training that survives a lost machine, with real processes on loopback: a replica is
killed with SIGKILL (no chance to clean up, as a reclaimed VM dies) right after a backup,
then started again as Vertex restarts a replica; every wait is bounded."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from models import distribution as D
from models import fault_tolerance as FT
from models import local_cluster as C
from models.sample_transform import raw_rows_auc as auc

STEPS, BATCH, SEED, EVERY = 120, 128, 7, 20
TIMEOUT = 420  # any one process, start to end
PEERS = {D.PEER_TIMEOUT_ENV: "60"}  # a peer missing this long ends a replica with an error
# Within noise of the uninterrupted run: the input starts again from its beginning after a
# resume, so a few batches are seen twice (the multi-worker test in distribution_test.py
# allows the same).
NOISE = 0.015


def args(transform: Path, out: Path, backups: Path, distribution: str = "none", raw=False,
         rounds: int = 2) -> dict:
    return C.trainer_args(transform, out, STEPS, BATCH, SEED, distribution, eval_rounds=rounds,
                          raw=raw, backup_root=str(backups), backup_every_steps=EVERY)


def finish(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    C.finish(processes, logs, TIMEOUT)


def history(out: Path) -> dict:
    return json.loads((out / "run" / "history.json").read_text())


def leftovers(backups: Path) -> list[Path]:
    return list(backups.iterdir()) if backups.exists() else []


@pytest.fixture(scope="module")
def uninterrupted(bundled_transform, tmp_path_factory) -> float:
    """The AUC of the same training, backed up as it goes but never interrupted."""
    transform, held_out = bundled_transform
    out = tmp_path_factory.mktemp("uninterrupted")
    finish([C.start(args(transform, out, out / "backups"), log=out / "log")], [out / "log"])
    assert history(out)["steps"] == STEPS and history(out)["resumed_from_step"] == 0
    assert leftovers(out / "backups") == []  # removed once the model was exported
    return auc(out / "model", held_out)


def test_a_killed_trainer_started_again_resumes_from_its_backup_not_step_0(
        bundled_transform, uninterrupted, tmp_path):
    transform, held_out = bundled_transform
    backups = tmp_path / "backups"
    first = C.start(args(transform, tmp_path, backups), log=tmp_path / "first.log")
    killed_after = C.preempt(first, tmp_path / "first.log", TIMEOUT)
    assert first.returncode < 0 and not (tmp_path / "model").exists()
    assert len(leftovers(backups)) == 1  # the backup outlives the process

    finish([C.start(args(transform, tmp_path, backups), log=tmp_path / "again.log")],
           [tmp_path / "again.log"])
    record = history(tmp_path)
    assert record["steps"] == STEPS  # the configured number, not more
    assert killed_after <= record["resumed_from_step"] < STEPS
    assert f"resumed from the backup at step {record['resumed_from_step']}" in \
        (tmp_path / "again.log").read_text()
    assert abs(auc(tmp_path / "model", held_out) - uninterrupted) <= NOISE
    assert leftovers(backups) == []


@pytest.mark.parametrize("victim", ["worker", "chief"])
def test_a_lost_replica_of_a_multi_worker_cluster_fails_the_others_fast_and_the_restarted_cluster_resumes(  # noqa: E501
        bundled_transform, uninterrupted, tmp_path, victim):
    """What Vertex does with restart_job_on_worker_restart: every replica starts again."""
    transform, held_out = bundled_transform
    spec, backups = C.cluster_spec(workers=2), tmp_path / "backups"
    training = args(transform, tmp_path, backups, "auto", raw=True)

    def start(attempt: str) -> tuple[list[subprocess.Popen], list[Path]]:
        logs = [tmp_path / f"{kind}-{attempt}.log" for kind in ("chief", "worker")]
        return [C.start(training, {"cluster": spec, "task": {"type": kind, "index": 0}},
                        env=PEERS, log=log)
                for kind, log in zip(("chief", "worker"), logs, strict=True)], logs

    processes, logs = start("first")
    lost = ("chief", "worker").index(victim)
    killed_after = C.preempt(processes[lost], logs[lost], TIMEOUT)
    survivor, survivor_log = processes[1 - lost], logs[1 - lost]
    assert survivor.wait(TIMEOUT) != 0  # it fails; it does not hang
    text = survivor_log.read_text()  # it says what happened, what is kept, what to do
    assert "lost a replica of its cluster" in text and "start every replica again" in text

    processes, logs = start("again")
    finish(processes, logs)
    record = history(tmp_path)
    assert (record["distribution"]["strategy"], record["distribution"]["replicas"]) == \
        ("multi_worker", 2)
    assert record["steps"] == STEPS and killed_after <= record["resumed_from_step"] < STEPS
    assert abs(auc(tmp_path / "model", held_out) - uninterrupted) <= NOISE
    assert leftovers(backups) == []


def test_parameter_servers_carry_on_without_a_lost_worker_and_a_lost_server_ends_the_round(
        bundled_transform, uninterrupted, tmp_path):
    """TensorFlow's documented behaviour: the coordinator runs a lost worker's steps on the
    others and takes the worker back when it returns; a lost parameter server fails the
    coordinator at once (UnavailableError), and the cluster started again resumes from the
    last round's backup (Keras backs up once a round under parameter servers)."""
    transform, held_out = bundled_transform
    spec, backups = C.cluster_spec(workers=2, servers=1), tmp_path / "backups"
    training = args(transform, tmp_path, backups, "auto", rounds=6)
    tasks = [("chief", 0), ("worker", 0), ("worker", 1), ("ps", 0)]

    def start(task: tuple[str, int], attempt: str) -> subprocess.Popen:
        config = {"cluster": spec, "task": {"type": task[0], "index": task[1]}}
        return C.start(training, config, env=PEERS,
                       log=tmp_path / f"{task[0]}{task[1]}-{attempt}.log")

    running = {task: start(task, "first") for task in tasks}
    chief, chief_log = running[("chief", 0)], tmp_path / "chief0-first.log"
    try:
        first = int(C.wait_for_line(chief_log, r"backed up at step (\d+)", TIMEOUT,
                                    chief).group(1))
        running[("worker", 1)].kill()
        running[("worker", 1)].wait()
        running[("worker", 1)] = start(("worker", 1), "back")
        # training goes on: a later round is backed up with the worker lost and back
        C.wait_for_line(chief_log, rf"backed up at step (?!{first}\b)\d+", TIMEOUT, chief)
        running[("ps", 0)].kill()
        assert chief.wait(TIMEOUT) != 0  # at once, not after a timeout
        text = chief_log.read_text()
        assert "UnavailableError" in text and "lost a replica of its cluster" in text
        assert "start every replica again" in text
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
    logs = C.run(training, spec, tmp_path, timeout=TIMEOUT, env=PEERS)
    record = history(tmp_path)
    assert record["distribution"]["strategy"] == "parameter_server"
    assert first <= record["resumed_from_step"] < STEPS
    assert "resumed from the backup" in logs[0].read_text()
    # A step a worker was running when it was lost may run again: at least once, not
    # exactly once (what TensorFlow documents for the coordinator).
    assert STEPS <= record["steps"] <= STEPS + 2
    assert auc(tmp_path / "model", held_out) >= uninterrupted - 0.03  # as distribution_test
    assert leftovers(backups) == []


# ---------------------------------------------------------------- in one process


def test_the_backup_folder_names_the_training_not_the_run():
    one = {"train": ["gs://b/Transform/transformed_examples/7/Split-train_0/*"], "steps": 500}
    assert FT.backup_dir("gs://b/Trainer/backups/", one) == \
        FT.backup_dir("gs://b/Trainer/backups", dict(one))
    assert FT.backup_dir("r", one) != FT.backup_dir("r", {**one, "steps": 501})


def test_seconds_between_backups_are_refused_to_a_cluster_with_what_to_set():
    import tensorflow as tf

    with pytest.raises(ValueError, match="set backup_every_steps instead"):
        FT.callback("b", tf.distribute.get_strategy(), every_seconds=60, processes=2)


def test_a_backup_every_few_seconds_writes_as_it_goes(transform_dir, tmp_path, caplog):
    from models import model as M

    caplog.set_level(logging.INFO, logger=FT.__name__)
    import tensorflow_transform as tft

    graph = tft.TFTransformOutput(str(transform_dir / "graph"))
    files = [str(transform_dir / "examples" / "*")]
    M.fit(M.hparams({"batch_size": 8}), graph, files, files, steps=40, eval_steps=1, rounds=1,
          seed=1, verbose=0, backup=str(tmp_path / "b"), backup_every_seconds=1e-9)
    steps = [int(r.getMessage().split()[6]) for r in caplog.records
             if r.getMessage().startswith(FT.BACKED_UP)]
    assert steps[:3] == [1, 2, 3] and steps[-1] == 40  # every step, as asked
    assert (tmp_path / "b" / "chief" / "checkpoint").exists()  # left for run_fn to clear


def test_a_trainer_lost_between_training_and_export_trains_no_further(transform_dir,
                                                                       tmp_path):
    """The backup stays until run_fn has exported: a restart finds the finished state."""
    import tensorflow_transform as tft

    from models import model as M

    graph = tft.TFTransformOutput(str(transform_dir / "graph"))
    files = [str(transform_dir / "examples" / "*")]
    train = dict(hp=M.hparams({"batch_size": 8}), tf_transform_output=graph,
                 train_files=files, eval_files=files, steps=30, eval_steps=1, rounds=3,
                 seed=1, verbose=0, backup=str(tmp_path / "b"), backup_every_steps=7)
    first, _ = M.fit(**train)
    again, history = M.fit(**train)
    assert int(again.optimizer.iterations.numpy()) == 30 == getattr(again, FT.RESUMED)
    assert history.epoch == []  # nothing trained twice
    for mine, restored in zip(first.get_weights(), again.get_weights(), strict=True):
        assert (mine == restored).all()
