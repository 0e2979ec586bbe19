#!/usr/bin/env python
"""The outcome bandit on loopback: does traffic move to the better version, how fast, and
at what cost against a fixed 50/50 split and a 10% canary?

Two versions trained on the same transformed bundled rows, one for far fewer steps (the
worse one is `stable`, the better one the newcomer). The local server runs in its own
process; a client streams held-out rows one request at a time, each with an X-Request-Id,
and feeds their labels back through `:feedback` after a delay (labels arrive late). Every
loop is bounded by the number of requests and by a deadline.

Regret of a request = reward the better version would have earned on that row minus the
reward of the version that answered (reward: the probability given to the true label, the
bandit's default). A fixed split's expected regret is its share of the worse version times
the same per-row gap.

    python benchmarks/bandit_simulation.py [--requests 3000] [--label-delay 100]

Figures go to outputs/bench/bandit.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)
from benchmarks.loopback import Client, free_port, run_and_save, wait_for_server  # noqa: E402

MODEL = "bandit-bench"


def score(model_dir: str, rows: list[dict[str, str]]):
    import tensorflow as tf

    from models import features as F
    from models import model as M

    model = tf.saved_model.load(model_dir)
    inputs = M.raw_inputs([{k: v for k, v in r.items() if k in F.BY_NAME} for r in rows])
    return model.signatures["serving_default"](**inputs)[M.PROBABILITY].numpy()


def simulate(args: argparse.Namespace) -> dict:
    import numpy as np

    from data.bundled import first_rows
    from models import features as F
    from models.sample_transform import instance, train_and_export, write_transform
    from serving.rollout import Rollouts

    work = Path(tempfile.mkdtemp(prefix="bandit-bench-"))
    try:
        rows = first_rows(15_002)
        random.Random(args.seed).shuffle(rows)
        train, stream = rows[:args.train_rows], rows[args.train_rows:]
        stream = (stream * (args.requests // len(stream) + 1))[:args.requests]
        started = time.monotonic()
        transform = write_transform(work / "transform", [instance(r) for r in train])
        weak = train_and_export(transform, work / "weak", steps=args.weak_steps, seed=1,
                                batch_size=64)
        strong = train_and_export(transform, work / "strong", steps=args.strong_steps,
                                  seed=2, batch_size=64)
        setup_seconds = time.monotonic() - started
        labels = np.array([F.raw_label(r) for r in stream])
        p = {1: score(weak, stream), 2: score(strong, stream)}
        reward = {v: np.where(labels == 1, p[v], 1 - p[v]) for v in p}
        better = max(reward, key=lambda v: reward[v].mean())
        worse = 3 - better
        gap = reward[better] - reward[worse]

        base = work / "serving"
        shutil.copytree(weak, base / "1")
        shutil.copytree(strong, base / "2")
        rollouts = Rollouts(MODEL, base, work / "config")
        rollouts.set_stable(1)
        rollouts.start_bandit([1, 2], None, floor=args.floor, min_labels=args.min_labels)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--port", str(port), "--model-name", MODEL,
             "--model-base-path", str(base), "--config-dir", str(work / "config"),
             "--request-log", "", "--poll-seconds", "1"], cwd=ROOT,
            env={**os.environ, "TAXI_OUTPUT_ROOT": str(work / "outputs")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_server(port, server, MODEL)
            client = Client(port)
            served, failures, pending, timeline = [], 0, [], []
            labelled, reached = 0, None
            deadline = time.monotonic() + args.max_seconds
            latency = []
            for i, row in enumerate(stream):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"deadline of {args.max_seconds} s passed at request {i}")
                key = f"sim-{i}"
                t0 = time.perf_counter()
                try:
                    _, headers = client.post(
                        f"/v1/models/{MODEL}:predict",
                        {"instances": [{k: v for k, v in row.items() if k != "tips"}]},
                        {"X-Request-Id": key})
                    version = int(headers["X-Served-By"].split(";")[0])
                except (RuntimeError, OSError, KeyError, ValueError):
                    client = Client(port)
                    failures += 1
                    version = 0
                latency.append((time.perf_counter() - t0) * 1000)
                served.append(version)
                pending.append((i, key))
                due = [(j, k) for j, k in pending if j <= i - args.label_delay]
                if len(due) >= args.feedback_batch or i == len(stream) - 1:
                    if i == len(stream) - 1:
                        due = pending
                    fed, _ = client.post(
                        f"/v1/models/{MODEL}:feedback",
                        {"labels": [{"key": k, "label": int(labels[j])} for j, k in due]})
                    labelled += fed["accepted"]
                    pending = pending[len(due):]
                    share = {a["version"]: a["traffic"] for a in fed["arms"]}
                    timeline.append({"request": i + 1, "labelled": labelled,
                                     "traffic_better": round(share[better], 4)})
                    if reached is None and share[better] >= 0.8:
                        reached = {"labelled": labelled, "requests": i + 1}
            status = rollouts.describe()
            promoted = None
            try:
                promoted = rollouts.promote().stable
            except Exception as e:  # noqa: BLE001 - reported: the bandit did not decide
                promoted = f"not decided: {e}"
        finally:
            server.terminate()
            server.wait(timeout=30)
        chosen = np.array(served)
        ok = chosen > 0
        regret = float(np.sum(np.where(chosen == worse, gap, 0.0)[ok]))
        windows = [round(float(np.mean(chosen[k:k + 500] == better)), 3)
                   for k in range(0, len(chosen), 500)]
        return {
            "requests": len(stream), "failures": failures, "label_delay": args.label_delay,
            "floor": args.floor, "setup_seconds": round(setup_seconds, 1),
            "versions": {str(v): {"steps": args.weak_steps if v == 1 else args.strong_steps,
                                  "mean_reward": round(float(reward[v].mean()), 4)}
                         for v in (1, 2)},
            "better": better,
            "better_traffic_at_80_percent": reached,
            "share_of_requests_to_better_per_500": windows,
            "regret": {"bandit": round(regret, 1),
                       "split_50_50": round(float(0.5 * gap.sum()), 1),
                       "canary_10_percent_to_new": round(float(
                           (0.9 if better == 2 else 0.1) * gap.sum()), 1),
                       "always_better": 0.0},
            "latency_ms": {"p50": round(float(np.percentile(latency, 50)), 2),
                           "p99": round(float(np.percentile(latency, 99)), 2)},
            "promoted": promoted, "timeline": timeline[::max(1, len(timeline) // 20)],
            "status": status,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from settings import quiet

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--label-delay", type=int, default=100,
                        help="a row's label comes back this many requests later")
    parser.add_argument("--feedback-batch", type=int, default=50)
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--weak-steps", type=int, default=20)
    parser.add_argument("--strong-steps", type=int, default=1500)
    parser.add_argument("--floor", type=float, default=0.05)
    parser.add_argument("--min-labels", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "bandit.json"))
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    result, log_file = run_and_save(simulate, args, "bandit", lambda r: {
        k: v for k, v in r.items() if k not in ("timeline", "status")})
    if result is None:
        return 2
    print(result["status"])
    print(f"logs: {log_file}")
    return 0 if result["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
