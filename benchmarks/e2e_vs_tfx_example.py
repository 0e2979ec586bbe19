#!/usr/bin/env python
"""This project's default local run vs TFX's own taxi native-Keras example, side by side.

Both run on the same bundled CSV, on this machine, one after the other, each in a fresh
process (so start-up and imports count, as they do for a user). Printed and written as
JSON: wall time and ratio, per-component times from MLMD, peak RSS, a fully cached rerun
of ours, and both models' AUC and accuracy on the rows that *both* pipelines held out, with
a gradient-boosted tree baseline (scikit-learn, trained on our train split) beside them.
Last, the development loop's smoke run: ours on a 3,000-row sample with 100 training steps,
from an empty output root. Then the loop's goals, as ratios to the example's wall time
measured in the same run (absolute seconds differ from machine to machine): first run
<= 0.35x, smoke run <= 0.25x, fully cached rerun <= 0.05x, each met or not; the share of
the first run the refit takes (--no-refit leaves it out); and for a missed goal what the
smoke run shows stands in the way: how much of the components' time does not shrink with
the rows.

    python benchmarks/e2e_vs_tfx_example.py [--out outputs/bench/e2e] [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)

REFERENCE_NAME = "chicago_taxi_native_keras"
TIP_FRACTION = 0.2  # the example's label and ours: a tip above 20% of the fare
SMOKE_ROWS, SMOKE_STEPS = 3000, 100
# The development loop's goals: (the figure's key in results, label, at most).
GOALS = (("ratio", "first run / TFX example", 0.35),
         ("smoke_ratio", "smoke run / TFX example", 0.25),
         ("cached_ratio", "cached rerun / TFX example", 0.05))
REFIT_STEPS = ("RefitTransform", "Refit", "RefitCheck")


def peak_rss_mib() -> float:
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kib, children_kib) / 1024


# ---------------------------------------------------------------- one side, in its own process


def run_reference(out: Path, data_root: str) -> dict:
    """TFX's example exactly as shipped (its module file, steps, Beam args, BeamDagRunner)."""
    import tfx.examples.chicago_taxi_pipeline as example_pkg
    from tfx.examples.chicago_taxi_pipeline import taxi_pipeline_native_keras as example
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    module_file = str(Path(example_pkg.__file__).parent / "taxi_utils_native_keras.py")
    BeamDagRunner().run(example._create_pipeline(
        pipeline_name=REFERENCE_NAME,
        pipeline_root=str(out / "pipelines" / REFERENCE_NAME),
        data_root=data_root,
        module_file=module_file,
        serving_model_dir=str(out / "serving" / REFERENCE_NAME),
        metadata_path=str(out / "metadata" / f"{REFERENCE_NAME}.db"),
        beam_pipeline_args=example._beam_pipeline_args,
    ))
    return {"metadata_path": str(out / "metadata" / f"{REFERENCE_NAME}.db"),
            "pipeline_name": REFERENCE_NAME, "serving_dir": str(out / "serving" / REFERENCE_NAME)}


def run_ours(out: Path, data_root: str, train_steps: int | None = None) -> dict:
    import local_runner
    from pipeline import configs

    settings = {"train_steps": train_steps} if train_steps else {}
    config = configs.load(data_root=data_root, output_root=str(out), **settings)
    local_runner.run(config)
    return {"metadata_path": config.metadata_path, "pipeline_name": config.pipeline_name,
            "serving_dir": config.serving_dir}


def side_main(side: str, out: Path, data_root: str, train_steps: int | None) -> None:
    start = time.monotonic()
    info = run_reference(out, data_root) if side == "reference" else \
        run_ours(out, data_root, train_steps)
    info["inner_seconds"] = time.monotonic() - start
    info["peak_rss_mib"] = peak_rss_mib()
    print("BENCH-RESULT " + json.dumps(info), flush=True)


def run_side(side: str, out: Path, data_root: str, train_steps: int | None = None) -> dict:
    start = time.monotonic()
    steps = ["--train-steps", str(train_steps)] if train_steps else []
    proc = subprocess.run(
        [sys.executable, __file__, "--side", side, "--out", str(out), "--data-root", data_root,
         *steps], capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"{side} run failed (exit {proc.returncode})")
    info = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    info["wall_seconds"] = wall
    return info


# ---------------------------------------------------------------- measuring


def csv_rows(data_root: str) -> int:
    from data import bundled

    return sum(bundled.count_rows(path) for path in Path(data_root).glob("*.csv"))


def goal_lines(results: dict) -> list[str]:
    """Each goal against its figure and, when one is missed and the smoke run was measured,
    what stands in the way: how much of the components' time does not shrink with the
    rows (benchmarks/README.md has the profiles)."""
    reference = (results.get("reference") or {}).get("wall_seconds")

    def ratio(seconds: float | None) -> float | None:
        return seconds / reference if reference and seconds is not None else None

    figures = {"ratio": results.get("ratio"),
               "cached_ratio": ratio(results["ours_cached"]["wall_seconds"]),
               "smoke_ratio": ratio(results.get("smoke", {}).get("wall_seconds"))}
    lines, missed = [], False
    for key, label, limit in GOALS:
        value = figures[key]
        if value is None:
            continue
        met = value <= limit
        missed |= not met
        lines.append(f"  {label:<26}{value:>8.2f}  goal <= {limit:g}: "
                     f"{'met' if met else 'NOT met'}")
    refit = sum(results["ours"]["components"].get(step, {}).get("seconds", 0)
                for step in REFIT_STEPS)
    if refit and reference:
        lines.append(f"  {'first run, refit left out':<26}"
                     f"{(results['ours']['wall_seconds'] - refit) / reference:>8.2f}  "
                     f"(its steps took {refit:.1f} s of it: --no-refit)")
    if missed and "smoke" in results:
        full, smoke = results["ours"], results["smoke"]
        full_sum = sum(c["seconds"] for c in full["components"].values())
        smoke_sum = sum(c["seconds"] for c in smoke["components"].values())
        lines += [
            f"  in the way: the components took {smoke_sum:.1f} s on {SMOKE_ROWS:,} rows and "
            f"{full_sum:.1f} s on {full['rows']:,}:",
            f"  {SMOKE_ROWS / full['rows']:.0%} of the rows cost {smoke_sum / full_sum:.0%} "
            "of the time, each component's fixed cost, not the data;",
            f"  start-up and bookkeeping outside them: "
            f"{smoke['wall_seconds'] - smoke_sum:.1f} s. Profiles: benchmarks/README.md.",
        ]
    return lines


def component_times(info: dict) -> dict:
    from reporting import runs

    summary = runs.summarize(info["metadata_path"], info["pipeline_name"])
    return {c.node_id: {"state": c.state, "seconds": round(c.seconds, 1)}
            for c in summary.components}


def eval_split_records(info: dict, split: str = "eval") -> list[bytes]:
    """A split's examples, re-serialized deterministically so both pipelines' copies compare."""
    import tensorflow as tf

    from reporting import runs

    try:  # ours is ExampleGen; TFX's example (and our older runs) CsvExampleGen
        uri = runs.newest_output(info["metadata_path"], "ExampleGen", "Examples")
    except FileNotFoundError:
        uri = runs.newest_output(info["metadata_path"], "CsvExampleGen", "Examples")
    files = sorted(tf.io.gfile.glob(f"{uri}/Split-{split}/*"))
    return [tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _table(records: list[bytes]):
    """Raw model features as columns (strings as categories) and the label."""
    import pandas as pd
    import tensorflow as tf

    from models import features as F

    rows, labels = [], []
    for record in records:
        feature = tf.train.Example.FromString(record).features.feature
        row = {}
        for f in F.FEATURES:
            values = feature[f.name]
            value = (values.bytes_list.value or values.float_list.value
                     or values.int64_list.value or [None])[0]
            row[f.name] = value.decode() if isinstance(value, bytes) else value
        rows.append(row)
        tips, fare = feature["tips"].float_list.value, feature["fare"].float_list.value
        labels.append(int(bool(tips and fare) and tips[0] > TIP_FRACTION * fare[0]))
    table = pd.DataFrame(rows)
    for f in F.FEATURES:
        if f.dtype == "string":
            table[f.name] = table[f.name].astype("category")
    return table, labels


def gradient_boosting_quality(ours: dict, test, test_labels: list[int]) -> dict:
    """A gradient-boosted tree baseline trained on our train split, on the same held-out
    rows (`_table`): what the raw features allow without a neural network."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score

    train, train_labels = _table(eval_split_records(ours, "train"))
    for name in train.select_dtypes("category"):
        test[name] = test[name].cat.set_categories(train[name].cat.categories)
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0,
                                           categorical_features="from_dtype")
    p = model.fit(train, train_labels).predict_proba(test)[:, 1]
    return {"auc": roc_auc_score(test_labels, p), "accuracy": accuracy_score(test_labels, p > 0.5)}


def latest_model(serving_dir: str) -> str:
    versions = sorted(os.listdir(serving_dir), key=int)
    return os.path.join(serving_dir, versions[-1])


def held_out_quality(ours: dict, reference: dict | None) -> dict:
    """AUC and accuracy of both pushed models on rows neither trained on."""
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import accuracy_score, roc_auc_score


    held_out = set(eval_split_records(ours))
    if reference:
        held_out &= set(eval_split_records(reference))
    records = sorted(held_out)
    if not records:
        raise SystemExit("the two pipelines' eval splits share no rows; cannot compare quality")
    table, labels = _table(records)
    batch = tf.constant(records)
    result = {"held_out_rows": len(records), "positive_rate": float(np.mean(labels))}
    ours_model = tf.saved_model.load(latest_model(ours["serving_dir"]))
    p = ours_model.signatures["serving_examples"](examples=batch)["probabilities"].numpy()
    result["ours"] = {"auc": roc_auc_score(labels, p), "accuracy": accuracy_score(labels, p > 0.5)}
    if reference:
        ref_model = tf.saved_model.load(latest_model(reference["serving_dir"]))
        q = ref_model.signatures["serving_default"](examples=batch)["outputs"].numpy().reshape(-1)
        result["reference"] = {"auc": roc_auc_score(labels, q),
                               "accuracy": accuracy_score(labels, q > 0.5)}
    result["gradient_boosting"] = gradient_boosting_quality(ours, table, labels)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "e2e")
    parser.add_argument("--data-root", default=str(ROOT / "data" / "raw" / "chicago_taxi"))
    parser.add_argument("--skip-reference", action="store_true",
                        help="only our pipeline (quicker; no ratio)")
    parser.add_argument("--skip-smoke", action="store_true",
                        help=f"skip the {SMOKE_ROWS:,}-row, {SMOKE_STEPS}-step smoke run")
    parser.add_argument("--side", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--train-steps", type=int, help=argparse.SUPPRESS)
    from settings import quiet

    quiet.add_arguments(parser)
    args = parser.parse_args()
    if args.side:
        side_main(args.side, args.out / args.side, args.data_root, args.train_steps)
        return 0

    log_file = quiet.command_log(str(ROOT / "outputs"), "bench-e2e")
    try:
        level = quiet.terminal_level(args.log_level, args.verbose)
    except ValueError as e:
        parser.error(str(e))
    print(f"[bench] logs in {log_file}", flush=True)
    with quiet.routed(log_file, level) as out:
        bench(args, lambda text="": print(text, file=out, flush=True))
    return 0


def bench(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Both pipelines, the reruns, the smoke run and quality; `say` prints to the terminal."""
    from data import bundled

    bundled.materialize()
    if args.out.exists():
        import shutil

        shutil.rmtree(args.out)
    results: dict = {"machine": {"cores": os.cpu_count()}}
    reference = None
    if not args.skip_reference:
        say("[bench] running TFX's taxi native-Keras example ...")
        reference = run_side("reference", args.out, args.data_root)
        reference["components"] = component_times(reference)
        results["reference"] = reference
    say("[bench] running this project's pipeline ...")
    ours = run_side("ours", args.out, args.data_root)
    ours["components"] = component_times(ours)
    ours["rows"] = csv_rows(args.data_root)
    results["ours"] = ours
    # As in TFX's penguin e2e test: the first rerun re-evaluates (the first model is now
    # the baseline to compare with), the one after it is cached throughout.
    say("[bench] rerunning ours with nothing new (re-evaluates vs the new baseline) ...")
    rerun = run_side("ours", args.out, args.data_root)
    results["ours_rerun"] = {"wall_seconds": rerun["wall_seconds"],
                             "components": component_times(rerun)}
    say("[bench] rerunning ours again (fully cached) ...")
    cached = run_side("ours", args.out, args.data_root)
    results["ours_cached"] = {"wall_seconds": cached["wall_seconds"],
                              "components": component_times(cached)}
    if not args.skip_smoke:
        say(f"[bench] smoke run: ours on {SMOKE_ROWS:,} rows, {SMOKE_STEPS} steps, "
            "from nothing ...")
        smoke_out = args.out / "smoke"
        sample = bundled.write_sample(next(Path(args.data_root).glob("*.csv")),
                                      smoke_out / "smoke-data", SMOKE_ROWS)
        smoke = run_side("ours", smoke_out, str(sample.parent), SMOKE_STEPS)
        results["smoke"] = {"rows": SMOKE_ROWS, "train_steps": SMOKE_STEPS,
                            "wall_seconds": smoke["wall_seconds"],
                            "components": component_times(smoke)}
    results["quality"] = held_out_quality(ours, reference)
    if reference:
        results["ratio"] = ours["wall_seconds"] / reference["wall_seconds"]

    say("")
    say(f"{'':<26}{'ours':>12}{'TFX example':>14}")
    ref_wall = f"{reference['wall_seconds']:.1f} s" if reference else "-"
    say(f"{'wall time':<26}{ours['wall_seconds']:>10.1f} s{ref_wall:>14}")
    if reference:
        say(f"{'ratio ours / example':<26}{results['ratio']:>12.2f}")
    ref_rss = f"{reference['peak_rss_mib']:.0f} MiB" if reference else "-"
    say(f"{'peak RSS':<26}{ours['peak_rss_mib']:>8.0f} MiB{ref_rss:>14}")
    say(f"{'rerun (re-evaluation)':<26}{rerun['wall_seconds']:>10.1f} s")
    say(f"{'fully cached rerun':<26}{cached['wall_seconds']:>10.1f} s")
    if "smoke" in results:
        say(f"{'smoke run':<26}{results['smoke']['wall_seconds']:>10.1f} s"
              f"   ({SMOKE_ROWS:,} rows, {SMOKE_STEPS} training steps, from nothing)")
    q = results["quality"]
    for metric in ("auc", "accuracy"):
        ref_value = f"{q['reference'][metric]:.4f}" if reference else "-"
        say(f"{'held-out ' + metric:<26}{q['ours'][metric]:>12.4f}{ref_value:>14}"
              f"   (gradient-boosted trees on our train split: "
              f"{q['gradient_boosting'][metric]:.4f})")
    say(f"  (on {q['held_out_rows']} rows held out by both; {q['positive_rate']:.1%} positive)")
    say("\ngoals:")
    for line in goal_lines(results):
        say(line)
    say("\nper component (seconds, from MLMD):")
    say(f"  {'':<32}{'ours':>8}{'TFX example':>14}{'smoke run':>12}")
    names = list(ours["components"]) + [n for n in (reference or {}).get("components", {})
                                        if n not in ours["components"]]
    for name in names:
        mine = ours["components"].get(name, {}).get("seconds", "-")
        theirs = (reference or {}).get("components", {}).get(name, {}).get("seconds", "-")
        small = results.get("smoke", {}).get("components", {}).get(name, {}).get("seconds", "-")
        say(f"  {name:<32}{mine!s:>8}{theirs!s:>14}{small!s:>12}")
    path = args.out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    say(f"\n[bench] figures written to {path}")


if __name__ == "__main__":
    sys.exit(main())
