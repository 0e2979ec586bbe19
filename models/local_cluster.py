"""The Trainer's run_fn as the replicas of a cluster on this machine (127.0.0.1, free ports):
what Vertex or your own machines do with TF_CONFIG, in processes you can watch. Used by the
distribution tests and benchmarks/distributed_training.py; `python -m models.local_cluster
ARGS_JSON` is one replica (TF_CONFIG from its environment)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from settings.layout import PROJECT_ROOT


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_spec(workers: int, servers: int = 0) -> dict[str, list[str]]:
    """A chief, `workers` - 1 more workers and `servers` parameter servers, on loopback.
    With parameter servers the chief only coordinates and every worker trains."""
    extra = workers if servers else workers - 1
    ports = iter(free_ports(1 + extra + servers))
    spec = {"chief": [f"127.0.0.1:{next(ports)}"]}
    if extra:
        spec["worker"] = [f"127.0.0.1:{next(ports)}" for _ in range(extra)]
    if servers:
        spec["ps"] = [f"127.0.0.1:{next(ports)}" for _ in range(servers)]
    return spec


def trainer_args(transform: Path, out: Path, steps: int, batch: int, seed: int,
                 distribution: str = "auto", eval_rounds: int = 2,
                 raw: bool = False, holdout: float = 0.0, backup_root: str = "",
                 backup_every_steps: int = 0) -> dict[str, Any]:
    """FnArgs for run_fn over a Transform output folder (graph/, examples/ and raw/): the
    written rows, or with `raw` the raw rows through the graph, as the local pipeline;
    `holdout`: the in-time share run_fn holds out and reports the AUC of; `backup_root`:
    where the training state is backed up every `backup_every_steps` steps."""
    examples = str(transform / ("raw" if raw else "examples") / "*")
    return {
        "train_files": [examples],
        "eval_files": [examples],
        "transform_output": str(transform / "graph"),
        "serving_model_dir": str(out / "model"), "model_run_dir": str(out / "run"),
        "train_steps": steps, "eval_steps": 2,
        "custom_config": {"seed": seed, "distribution": distribution, "raw_examples": raw,
                          "eval_rounds": eval_rounds, "hparams": {"batch_size": batch},
                          "in_time_holdout": holdout, "backup_root": backup_root,
                          "backup_every_steps": backup_every_steps},
    }


def start(args: dict, tf_config: dict | None = None, env: dict | None = None,
          log: Path | None = None) -> subprocess.Popen:
    """One replica: run_fn in its own process, with TF_CONFIG if given."""
    environ = {**os.environ, **(env or {}), "PYTHONPATH": str(PROJECT_ROOT)}
    environ.pop("TF_CONFIG", None)
    if tf_config:
        environ["TF_CONFIG"] = json.dumps(tf_config)
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
    return subprocess.Popen([sys.executable, "-m", "models.local_cluster", json.dumps(args)],
                            cwd=PROJECT_ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(log: Path, pattern: str, timeout: float,
                  process: subprocess.Popen | None = None) -> re.Match:
    """The first match of `pattern` in the log, waited for; raises if `process` ends first
    or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace")) if log.exists() else None
        if found:
            return found
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{log.name} ended ({process.returncode}) before {pattern!r}:\n"
                               + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    raise TimeoutError(f"{pattern!r} not in {log.name} within {timeout:.0f} s")


def preempt(process: subprocess.Popen, log: Path, timeout: float) -> int:
    """Kills the replica as a lost machine dies (SIGKILL, no chance to clean up) once its
    log shows a backup; returns the step of that backup."""
    from models.fault_tolerance import BACKED_UP

    step = int(wait_for_line(log, rf"{BACKED_UP} (\d+)", timeout, process).group(1))
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    return step


def finish(processes: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    """Waits for every process (killing what is left after `timeout`) and raises with the
    tail of the first failure's log."""
    try:
        for process in processes:
            process.wait(timeout)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, log in zip(processes, logs, strict=True):
        if process.wait() != 0:
            raise RuntimeError(f"{log.name} exited {process.returncode}:\n"
                               + log.read_text()[-3000:])


def run(args: dict, spec: dict[str, list[str]] | None, folder: Path, timeout: float,
        env: dict | None = None) -> list[Path]:
    """Every replica of `spec` (or one process without), until the chief ends; servers and
    workers left are stopped. Returns the logs; raises with the first failure's log."""
    tasks = [(kind, i) for kind in ("chief", "worker", "ps") for i in range(len((spec or {})
                                                                             .get(kind, [])))]
    tasks = tasks or [("single", 0)]
    processes, logs = [], []
    for kind, index in tasks:
        log = folder / f"{kind}-{index}.log"
        config = {"cluster": spec, "task": {"type": kind, "index": index}} if spec else None
        processes.append(start(args, config, env, log))
        logs.append(log)
    try:
        processes[0].wait(timeout)
        for (kind, _), process in zip(tasks[1:], processes[1:], strict=True):
            if kind == "worker" and "ps" not in (spec or {}):
                process.wait(max(1.0, timeout / 10))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for (kind, _), process, log in zip(tasks, processes, logs, strict=True):
        served = "ps" in (spec or {}) and kind != "chief"  # servers are stopped, not finished
        if process.returncode != 0 and not served:
            raise RuntimeError(f"{log.name} exited {process.returncode}:\n"
                               + log.read_text()[-3000:])
    return logs


if __name__ == "__main__":
    import logging

    from tfx.components.trainer.fn_args_utils import FnArgs

    from models import model as M

    logging.basicConfig(level=logging.INFO, force=True)  # TF may have set up the root
    M.run_fn(FnArgs(**json.loads(sys.argv[1])))
