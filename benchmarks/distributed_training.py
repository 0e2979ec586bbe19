#!/usr/bin/env python
"""The Trainer's run_fn under each tf.distribute strategy on this machine: examples/s, the
cost of a step, and the exported model's AUC on held-out raw rows.

    python benchmarks/distributed_training.py [--rows 12000] [--steps 400] [--batch 256]

Every configuration trains the same global batch for the same number of steps from the same
seed, on a Transform output of the first ROWS bundled rows; the next 3,000 rows are held
out and scored through the exported serving_default signature. Replicas are real processes
on 127.0.0.1 (models/local_cluster.py). On a 2-core machine with no GPU this measures the
overhead of each strategy's collectives and coordination, not a speed-up: every replica
shares the same two cores. Figures go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)
from data.bundled import first_rows  # noqa: E402
from models import distribution as D  # noqa: E402
from models import local_cluster as C  # noqa: E402
from models.sample_transform import (  # noqa: E402
    instance,
    raw_rows_auc,
    write_transform,
)

CONFIGS = {  # name: (cluster shape or None, extra environment, strategy setting)
    "one process": (None, {}, "none"),
    "two logical CPUs (mirrored)": (None, {D.LOGICAL_CPUS_ENV: "2"}, "mirrored"),
    "two workers (multi_worker)": ((2, 0), {}, "auto"),
    "1 PS + 2 workers (parameter_server)": ((2, 1), {}, "auto"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    args = parser.parse_args(argv)
    rows = first_rows(args.rows + 3000)
    work = Path(tempfile.mkdtemp(prefix="dist-bench-"))
    print(f"transforming {args.rows} rows into {work} ...", flush=True)
    transform = write_transform(work / "transform", [instance(r) for r in rows[:args.rows]])
    held_out = rows[args.rows:]
    results = []
    for number, (name, (shape, env, setting)) in enumerate(CONFIGS.items()):
        if args.only and name not in args.only.split(","):
            continue
        out = work / f"config-{number}"
        out.mkdir()
        spec = C.cluster_spec(*shape) if shape else None
        started = time.monotonic()
        try:
            C.run(C.trainer_args(transform, out, args.steps, args.batch, seed=7,
                                        distribution=setting), spec, out, timeout=1800, env=env)
        except RuntimeError as e:
            print(f"{name}: FAILED\n{e}", flush=True)
            results.append({"config": name, "failed": str(e)[:300]})
            continue
        wall = time.monotonic() - started
        history = json.loads((out / "run" / "history.json").read_text())
        seconds = history["train_seconds"]  # the chief's fit, without process start-up
        result = {"config": name, "replicas": history["distribution"]["replicas"],
                  "train_seconds": round(seconds, 1), "wall_seconds": round(wall, 1),
                  "examples_per_s": round(args.steps * args.batch / seconds),
                  "ms_per_step": round(seconds / args.steps * 1000, 1),
                  "auc": round(raw_rows_auc(out / "model", held_out), 4)}
        results.append(result)
        print(json.dumps(result), flush=True)
    base = next((r for r in results if r["config"] == "one process" and "failed" not in r), None)
    print(f"\n{'configuration':<38} {'replicas':>8} {'ex/s':>8} {'ms/step':>8} "
          f"{'+ms/step':>8} {'AUC':>7} {'wall s':>7}")
    for r in results:
        if "failed" in r:
            print(f"{r['config']:<38} failed")
            continue
        extra = r["ms_per_step"] - base["ms_per_step"] if base else float("nan")
        print(f"{r['config']:<38} {r['replicas']:>8} {r['examples_per_s']:>8} "
              f"{r['ms_per_step']:>8} {extra:>+8.1f} {r['auc']:>7} {r['wall_seconds']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
