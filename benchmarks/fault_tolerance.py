#!/usr/bin/env python
"""What a lost machine costs a multi-worker training job, and what the backups that make it
survive cost when nothing is lost.

    python benchmarks/fault_tolerance.py [--rows 12000] [--steps 500] [--batch 256]
                                         [--intervals 50,200] [--kill-at 0.66]

A chief and a worker (MultiWorkerMirroredStrategy, real processes on 127.0.0.1,
models/local_cluster.py) train the same model from the same seed:
  - uninterrupted, without backups and with a backup every N steps for each interval
    (the overhead of backing up);
  - for each interval, once with the worker and once with the chief killed (SIGKILL) when
    the chief's progress log first passes KILL_AT of the steps; then, as Vertex does with
    restart_job_on_worker_restart, the other replica fails and both start again and resume
    from the last backup.
Steps lost: the step the chief's log had reached when the kill was sent, less the step the
restarted job resumed from (a lower bound: the log reports at most once a second). Time
added: the wall time of the interrupted job, both attempts, less the uninterrupted one's
with the same interval; it holds the restarted processes' start-up, which on Vertex also
holds provisioning a VM. Figures go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)
from data.bundled import first_rows  # noqa: E402
from models import distribution as D  # noqa: E402
from models import fault_tolerance as FT  # noqa: E402
from models import local_cluster as C  # noqa: E402
from models.sample_transform import instance, raw_rows_auc, write_transform  # noqa: E402

TIMEOUT = 1800.0
PEERS = {D.PEER_TIMEOUT_ENV: "60"}
KINDS = ("chief", "worker")


def start(args: dict, spec: dict, out: Path, attempt: str) -> list[tuple[subprocess.Popen, Path]]:
    started = []
    for kind in KINDS:
        log = out / f"{kind}-{attempt}.log"
        config = {"cluster": spec, "task": {"type": kind, "index": 0}}
        started.append((C.start(args, config, env=PEERS, log=log), log))
    return started


def wait_all(replicas: list[tuple[subprocess.Popen, Path]]) -> list[int]:
    codes = []
    for process, _ in replicas:
        try:
            codes.append(process.wait(TIMEOUT))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def reached(chief: tuple[subprocess.Popen, Path], step: int) -> int:
    """Waits (bounded) until the chief's progress log passes `step`; the step it shows."""
    process, log = chief
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        shown = [int(s) for s in re.findall(r"step (\d+)/", log.read_text(errors="replace"))]
        if shown and max(shown) >= step:
            return max(shown)
        time.sleep(0.1)
    raise RuntimeError(f"the chief never showed step {step}; see {log}")


def train(args: dict, out: Path, victim: str | None, kill_at: int) -> dict:
    """One job; with `victim`, that replica is killed at `kill_at` and the job restarted."""
    spec = C.cluster_spec(workers=2)
    started = time.monotonic()
    replicas = start(args, spec, out, "first")
    killed_at = None
    if victim:
        killed_at = reached(replicas[0], kill_at)
        replicas[KINDS.index(victim)][0].send_signal(signal.SIGKILL)
        codes = wait_all(replicas)
        if all(code == 0 for code in codes):
            raise RuntimeError("the job finished before the kill landed: lower --kill-at")
        replicas = start(args, spec, out, "again")
    codes = wait_all(replicas)
    wall = time.monotonic() - started
    if any(codes):
        raise RuntimeError(f"replicas exited {codes}; see the logs in {out}")
    history = json.loads((out / "run" / "history.json").read_text())
    return {"wall_seconds": round(wall, 1), "train_seconds": history["train_seconds"],
            "steps": history["steps"], "killed_at_step": killed_at,
            "resumed_from_step": history["resumed_from_step"]}


def backups_written(out: Path) -> tuple[int, float]:
    """(backups the chief wrote, the milliseconds they took in all), from its logs."""
    found = [float(ms) for log in out.glob("chief-*.log") for ms in
             re.findall(rf"{FT.BACKED_UP} \d+ in (\d+) ms", log.read_text())]
    return len(found), sum(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--intervals", default="50,200", help="steps between backups")
    parser.add_argument("--kill-at", type=float, default=0.66,
                        help="share of the steps after which the replica is killed")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each job (medians)")
    args = parser.parse_args(argv)
    intervals = [int(i) for i in args.intervals.split(",")]
    kill_at = int(args.steps * args.kill_at)
    rows = first_rows(args.rows + 3000)
    work = Path(tempfile.mkdtemp(prefix="fault-bench-"))
    print(f"transforming {args.rows} rows into {work} ...", flush=True)
    transform = write_transform(work / "transform", [instance(r) for r in rows[:args.rows]])
    held_out = rows[args.rows:]
    jobs = [(interval, victim) for interval in [0, *intervals]
            for victim in ([None] if not interval else [None, "worker", "chief"])]
    runs: dict[tuple, list[dict]] = {job: [] for job in jobs}
    for repeat in range(args.repeats):  # interleaved, so a slow spell hits every job alike
        for interval, victim in jobs:
            out = work / f"every-{interval}-{victim or 'none'}-{repeat}"
            out.mkdir()
            training = C.trainer_args(transform, out, args.steps, args.batch, seed=7,
                                      raw=True, backup_root=str(work / "backups"),
                                      backup_every_steps=interval)
            if not interval:
                training["custom_config"].pop("backup_root")
            result = train(training, out, victim, kill_at)
            result["backups"], result["backup_ms"] = backups_written(out)
            result["auc"] = round(raw_rows_auc(out / "model", held_out), 4)
            runs[(interval, victim)].append(result)
            print(json.dumps({"interval": interval, "victim": victim, **result}), flush=True)

    def median_run(job: tuple) -> dict:
        """The run whose wall time is the median (the lower middle of an even count): its
        row is one run's own figures, which add up (killed at, resumed from, lost)."""
        ordered = sorted(runs[job], key=lambda r: r["wall_seconds"])
        return ordered[(len(ordered) - 1) // 2]

    print(f"\n{args.steps} steps of a global batch of {args.batch}, chief + 1 worker "
          f"(multi_worker), {args.repeats} runs each; each row is the median run by wall time")
    print(f"{'job':<32} {'backups':>7} {'backup ms':>9} {'wall s':>7} {'+wall s':>7} "
          f"{'killed@':>7} {'resumed@':>8} {'lost':>5} {'AUC':>7}")
    for interval, victim in jobs:
        job = (interval, victim)
        run = median_run(job)
        name = (f"every {interval} steps" if interval else "no backups") + \
            (f", {victim} killed" if victim else ", uninterrupted")
        reference = median_run((interval, None) if victim else (0, None))
        added = run["wall_seconds"] - reference["wall_seconds"]
        killed, resumed, lost = (
            (f"{run['killed_at_step']:.0f}", f"{run['resumed_from_step']:.0f}",
             f"{run['killed_at_step'] - run['resumed_from_step']:.0f}") if victim
            else ("", "", ""))
        print(f"{name:<32} {run['backups']:>7.0f} {run['backup_ms']:>9.0f} "
              f"{run['wall_seconds']:>7.1f} {added:>+7.1f} {killed:>7} {resumed:>8} "
              f"{lost:>5} {run['auc']:>7.4f}")
    print("\n+wall s: an interrupted job against the uninterrupted one with the same interval "
          "(both attempts, restart included); an uninterrupted one against no backups. "
          "backup ms: the chief's time inside the backups, all of them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
