#!/usr/bin/env python
"""Warm start vs cold start on a new span: validation AUC against training steps, side by side.

Two simulated spans drawn from the bundled data go through the real pipeline (span 1 cold,
span 2 warm-started), then, on the rows span 2's Trainer read (its window and its eval split),
the model is trained twice more with the same seed and steps: from scratch, and from span
1's blessed model. Printed and written as JSON: validation AUC after each round of steps
for both, and the steps each needs to reach the cold run's final AUC (minus a tolerance).

    python benchmarks/warm_start.py [--rows 5000] [--steps 500] [--rounds 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)


def steps_to_reach(aucs: list[float], target: float, steps_per_round: int) -> int | None:
    for i, auc in enumerate(aucs):
        if auc >= target:
            return (i + 1) * steps_per_round
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="rows per span (default 5000)")
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--rounds", type=int, default=10, help="validations (default 10)")
    parser.add_argument("--tolerance", type=float, default=0.002,
                        help="target = cold final AUC - this (default 0.002)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "warm_start")
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tensorflow_transform as tft

    import local_runner
    from data import simulator
    from models import model as M
    from pipeline import configs
    from reporting import runs

    shutil.rmtree(args.out, ignore_errors=True)
    spans = args.out / "spans"
    settings = dict(data_root=str(spans), input_pattern="span-{SPAN}/*",
                    output_root=str(args.out / "out"), train_steps=args.steps,
                    training_spans=2, safe_to_serve=False, warm_start=True)
    for span in (1, 2):
        simulator.write_span(spans, span, args.rows, seed=span)
        summary = local_runner.run(configs.load(env={}, **settings))
        print(f"span {span}: pipeline run {summary.run_id}, auc {summary.metrics.get('auc'):.4f}")
    artifacts = summary.artifacts
    graph_uri, examples = runs.newest_inputs(  # what span 2's Trainer read
        configs.load(env={}, **settings).metadata_path, "Trainer", ("TransformGraph", "Examples"))
    graph = tft.TFTransformOutput(graph_uri)
    train = [f"{examples}/Split-train_{age}/*" for age in range(2)]
    evaluation = [f"{examples}/Split-eval/*"]
    # Span 2's Trainer was warm-started: its history names span 1's blessed model.
    with open(f"{artifacts['Trainer']['ModelRun']}/history.json") as f:
        base_model = json.load(f)["warm_start"]

    curves = {}
    for name, base in (("cold", None), ("warm", base_model)):
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(42)
        start = M.build_model(M.hparams())  # step 0: what each starts from
        if base:
            M.warm_start(start, base, graph)
        at_zero = start.evaluate(M.input_fn(evaluation, graph, 256, shuffle=False, repeat=False),
                                 verbose=0, return_dict=True)["auc"]
        tf.keras.backend.clear_session()
        started = time.monotonic()
        _, history = M.fit(M.hparams(), graph, train, evaluation, steps=args.steps,
                           eval_steps=20, rounds=args.rounds, seed=42, verbose=0,
                           base_model=base)
        curves[name] = {"val_auc_at_step_0": round(float(at_zero), 4),
                        "val_auc": [round(float(x), 4) for x in history.history["val_auc"]],
                        "seconds": round(time.monotonic() - started, 1)}
    steps_per_round = -(-args.steps // args.rounds)
    target = curves["cold"]["val_auc"][-1] - args.tolerance
    for curve in curves.values():
        curve["steps_to_target"] = steps_to_reach(curve["val_auc"], target, steps_per_round)
    result = {"rows_per_span": args.rows, "steps": args.steps, "steps_per_round": steps_per_round,
              "target_auc": round(target, 4), "base_model": base_model, **curves}

    print(f"\nValidation AUC on span 2's eval split, every {steps_per_round} steps:")
    print(f"  {'step':>6}  {'cold':>7}  {'warm':>7}")
    print(f"  {0:>6}  {curves['cold']['val_auc_at_step_0']:>7.4f}  "
          f"{curves['warm']['val_auc_at_step_0']:>7.4f}")
    for i, (cold, warm) in enumerate(zip(curves["cold"]["val_auc"], curves["warm"]["val_auc"],
                                         strict=True)):
        print(f"  {(i + 1) * steps_per_round:>6}  {cold:>7.4f}  {warm:>7.4f}")
    print(f"Steps to reach AUC {target:.4f} (cold final - {args.tolerance}): "
          f"cold {curves['cold']['steps_to_target']}, warm {curves['warm']['steps_to_target']}")
    (args.out / "warm_start.json").write_text(json.dumps(result, indent=2))
    print(f"written: {args.out / 'warm_start.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
