#!/usr/bin/env python
"""Analyzer cache across spans: Transform's time per span with and without it.

K simulated spans of N rows each arrive one after another (`local_runner --watch --once`,
a rolling window of K spans), once with SpanTransform's span-keyed analyzer cache and once
with `--no-analyzer-cache`, each from an empty output root, in a fresh process. Per span:
Transform's seconds from MLMD. Without the cache the k-th run analyses k spans; with it,
one, and reads the others' analyzer results. Printed and written as JSON.

    python benchmarks/analyzer_cache.py [--rows 100000] [--spans 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)

SETTINGS = {"cache": "--analyzer-cache", "no cache": "--no-analyzer-cache"}


def watch(spans_dir: Path, out: Path, spans: int, flag: str) -> None:
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, str(ROOT / "local_runner.py"), "--watch", str(spans_dir), "--once",
            "--settle-seconds", "0", "--output-root", str(out), "--training-spans", str(spans),
            "--train-steps", "100", "--no-safe-to-serve", "--drift-action", "warn",
            "--min-auc", "0", flag, "--log-level", "WARNING"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"the {flag} runs failed (exit {proc.returncode})")


def transform_seconds(out: Path) -> list[dict]:
    """Per run, oldest first: the span and Transform's seconds."""
    from pipeline import configs
    from reporting import runs

    config = configs.load(env={}, output_root=str(out))
    store = runs.connect(config.metadata_path)
    result = []
    for run in runs.pipeline_runs(store, config.pipeline_name):
        summary = runs.summarize(config.metadata_path, config.pipeline_name, run.name)
        seconds = {c.node_id: c.seconds for c in summary.components}
        result.append({"span": summary.data_source.get("span"),
                       "window": summary.window_spans,
                       "transform_seconds": round(seconds.get("Transform", 0.0), 1)})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per span")
    parser.add_argument("--spans", type=int, default=3, help="spans, and the window size")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "cache")
    args = parser.parse_args(argv)

    from data import simulator

    spans_dir = args.out / "spans"
    shutil.rmtree(spans_dir, ignore_errors=True)
    for number in range(1, args.spans + 1):
        simulator.write_span(spans_dir, number, args.rows, seed=number)
    results = {}
    for name, flag in SETTINGS.items():
        print(f"{args.spans} spans of {args.rows:,} rows, {name} ...", flush=True)
        out = args.out / name.replace(" ", "-")
        watch(spans_dir, out, args.spans, flag)
        results[name] = transform_seconds(out)
    print(f"\n{'span':>4} {'window':>10} {'with cache':>11} {'without':>9}")
    for cached, uncached in zip(results["cache"], results["no cache"], strict=True):
        window = ",".join(str(s) for s in cached["window"] or [])
        print(f"{cached['span']:>4} {window:>10} {cached['transform_seconds']:>9.1f} s "
              f"{uncached['transform_seconds']:>7.1f} s")
    last_cached = results["cache"][-1]["transform_seconds"]
    last_uncached = results["no cache"][-1]["transform_seconds"]
    summary = {"rows_per_span": args.rows, "spans": args.spans, "runs": results,
               "full_window_saving_seconds": round(last_uncached - last_cached, 1),
               "full_window_ratio": round(last_cached / last_uncached, 2)}
    (args.out / "analyzer_cache.json").write_text(json.dumps(summary, indent=2))
    print(f"full window: {last_cached:.1f} s with the cache vs {last_uncached:.1f} s without "
          f"({summary['full_window_ratio']}x)\nwritten: {args.out / 'analyzer_cache.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
