"""Runs an exported .tflite model on raw CSV rows with the TFLite interpreter alone.

    python -m serving.tflite_example outputs/.../EdgeExport/edge_model/<id>/model_quant.tflite \\
        --input data/raw/chicago_taxi/data.csv --rows 5

What a device app does: raw feature values in (strings, '' for absent; numbers, NaN for
absent), P(big tipper) out. No TensorFlow graph code and no preprocessing of its own: the
Transform graph is inside the file. On a device, link the TFLite runtime with the Flex
delegate (select TF ops); tensorflow's Python interpreter used here includes it. Score a single
row as a batch of two (see TFLiteModel.predict): a fresh interpreter fails on a batch of 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="model.tflite or model_quant.tflite")
    parser.add_argument("--input", type=Path, required=True, help="CSV with the raw columns")
    parser.add_argument("--rows", type=int, default=5, help="how many rows to score")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: no such model file: {args.model}", file=sys.stderr)
        return 2

    from serving.batch_predict import BatchInputError, check_columns, decode_chunk, read_chunks
    from serving.tflite_export import TFLiteModel

    try:
        check_columns(args.input, "row")
    except (BatchInputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    chunk = next(read_chunks(args.input, args.rows))
    decoded = decode_chunk(chunk, "row", first_row=1)
    for bad in decoded.bad:
        print(f"row {bad['row']} skipped: {bad['reason']}", file=sys.stderr)
    probabilities = TFLiteModel(args.model).predict(decoded.inputs)
    for row, probability in zip(decoded.keys, np.asarray(probabilities), strict=True):
        print(f"row {row}: P(big tipper) = {probability:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
