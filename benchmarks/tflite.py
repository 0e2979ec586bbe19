#!/usr/bin/env python
"""The edge export: TFLite size, AUC loss and single-row latency vs the SavedModel.

Exports the newest pushed model (or --model) as float and quantized TFLite, scores the eval
split of the newest ExampleGen output in MLMD (or --examples) with all three, and times
single raw rows through each: TFLite's interpreter vs the SavedModel's `serving_default`
in-process. Printed and written as JSON.

    python benchmarks/tflite.py [--model DIR] [--examples DIR] [--calls 500] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)
from benchmarks.serving_latency import percentiles  # noqa: E402


def single_row_ms(predict, inputs: dict, calls: int) -> list[float]:
    rows = len(next(iter(inputs.values())))
    ms = []
    for i in range(calls + 20):
        row = {k: v[i % rows:i % rows + 1] for k, v in inputs.items()}
        started = time.perf_counter()
        predict(row)
        if i >= 20:  # the first calls allocate and warm up
            ms.append((time.perf_counter() - started) * 1000)
    return ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SavedModel (default: the newest pushed version)")
    parser.add_argument("--examples", help="ExampleGen output dir with Split-eval "
                                           "(default: the newest in MLMD)")
    parser.add_argument("--calls", type=int, default=500, help="single-row calls timed per model")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "tflite")
    args = parser.parse_args(argv)

    from pipeline import configs
    from reporting import runs
    from serving import batch_predict, tflite_export

    config = configs.load(env={})
    model = batch_predict.resolve_model(args.model, config.serving_dir)
    examples = args.examples or runs.newest_output(config.metadata_path, "ExampleGen",
                                                          "Examples")
    paths = tflite_export.export(model, args.out)
    inputs, labels = tflite_export.labelled_rows(examples, "eval", model)
    comparison = tflite_export.compare(model, paths, inputs, labels)

    saved_model = tflite_export.saved_model_predictor(model)
    latency = {"saved_model": percentiles(single_row_ms(saved_model, inputs, args.calls))}
    for kind, path in paths.items():
        latency[kind] = percentiles(single_row_ms(tflite_export.TFLiteModel(path).predict,
                                                  inputs, args.calls))
    result = {"model": model, "examples": examples, **comparison.to_dict(),
              "single_row_latency": latency}

    print(f"\nTFLite export of {model}, eval split of {examples} ({comparison.rows:,} rows)")
    print(f"{'':14}{'size':>10}{'AUC':>9}{'max |diff|':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for kind in ("saved_model", "float", "quantized"):
        size = f"{comparison.size_bytes[kind] / 1024:.0f} KiB" if kind in paths else ""
        diff = f"{comparison.max_abs_diff[kind]:.2e}" if kind in paths else ""
        print(f"{kind:14}{size:>10}{comparison.auc[kind]:>9.4f}{diff:>12}"
              f"{latency[kind]['p50_ms']:>9.3f}{latency[kind]['p99_ms']:>9.3f}")
    print(f"size ratio float/quantized {result['size_ratio']}x; quantized AUC loss "
          f"{result['auc_loss']:.5f}")
    (args.out / "tflite.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"written: {args.out / 'tflite.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
