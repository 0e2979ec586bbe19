"""Batch (static) predictions for any CSV of raw rows, by the model's own serving signature.

    python -m serving.batch_predict --input trips.csv --output predictions.parquet \\
        [--model DIR | --serving-dir DIR] [--key trip_id]

The CSV is read in chunks (memory stays flat on any input size), checked column by column
against the feature spec, and scored by `serving_default`: the Transform graph online serving
runs, so batch and online predictions agree (to float32 rounding). Each output row carries the
input's key (`--key`, or the data row number) so predictions join back to their rows.

Bad rows are neither dropped silently nor fatal: they go to OUTPUT.bad_rows.csv with their
row number and the reason, the summary counts them and prints the first few.
Exit status: 0 done; 2 bad input (no such file or column, no model); 3 more bad rows than
--max-bad-fraction allows (the predictions for the good rows are written all the same).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from serving import versions
from settings import quiet

log = logging.getLogger(__name__)

ROW_COLUMN = "row"  # 1-based data row number: the key when the input has none
BAD_EXAMPLES_SHOWN = 5


class BatchInputError(ValueError):
    """The input cannot be scored at all (missing file, column or model)."""


@dataclass
class Decoded:
    """One chunk: model inputs for its good rows, their keys, and the rejected rows."""

    inputs: dict[str, np.ndarray]
    keys: pd.Series
    bad: list[dict[str, str]] = field(default_factory=list)


def decode_chunk(frame: pd.DataFrame, key: str, first_row: int) -> Decoded:
    """CSV strings -> `serving_default` inputs (strings, '' = absent; float64, NaN = absent).

    The raw-row contract (models/contract.py), vectorised per column: rows that a cheap
    test marks as suspect are judged value by value by the contract itself, so a bad row's
    reason is the message the REST server would give.
    """
    from models import contract

    rows = pd.RangeIndex(first_row, first_row + len(frame))
    reasons = pd.Series("", index=frame.index, dtype=object)
    inputs: dict[str, np.ndarray] = {}
    for column in contract.fields():
        text = frame[column.name]
        if column.dtype == "string":
            suspect = (text == "") if column.required else pd.Series(False, index=text.index)
            inputs[column.name] = text.to_numpy(dtype=object)
        else:
            absent = (text == "") | (text.str.strip().str.lower() == "nan")
            number = pd.to_numeric(text, errors="coerce")
            fine = np.isfinite(number) & (number.abs() <= contract.FLOAT32_MAX)
            if column.dtype == "int":
                fine &= number.round() == number
            if column.minimum is not None:
                fine &= number >= column.minimum
            if column.maximum is not None:
                fine &= number <= column.maximum
            suspect = (absent & column.required) | (~absent & ~fine)
            inputs[column.name] = number.to_numpy(dtype=np.float64, na_value=np.nan)
        for index in suspect.index[suspect & (reasons == "")]:  # rare: judged one by one
            try:
                contract.value(column, {column.name: text[index]})
            except contract.ContractError as e:
                reasons[index] = str(e)
    good = (reasons == "").to_numpy()
    keys = (pd.Series(rows, index=frame.index) if key == ROW_COLUMN else frame[key])[good]
    bad = [{ROW_COLUMN: str(row), "reason": reason, **record}
           for row, reason, record in zip(rows[~good], reasons[~good],
                                          frame[~good].to_dict("records"), strict=True)]
    return Decoded({name: values[good] for name, values in inputs.items()}, keys, bad)


def to_tensors(inputs: dict[str, np.ndarray], rows: slice) -> dict:
    """Decoded columns -> `serving_default`'s tensors, typed as models.model declares them."""
    import tensorflow as tf

    from models.model import raw_serving_inputs

    specs = raw_serving_inputs()
    return {name: tf.constant(values[rows], specs[name].dtype) for name, values in inputs.items()}


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Every value as text ('' for empty): typing is decode_chunk's job, per feature."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows)


def check_columns(path: Path, key: str) -> list[str]:
    from models import features as F

    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    missing = [f.name for f in F.SERVING_FEATURES if f.name not in header]
    if key != ROW_COLUMN and key not in header:
        missing.insert(0, key)
    if missing:
        raise BatchInputError(f"{path}: no column(s) {missing}; the header has {header}")
    return header


def resolve_model(model: str | None, serving_dir: str | None) -> str:
    """An explicit SavedModel, or the newest version the Pusher wrote to `serving_dir`."""
    if model:
        if not os.path.exists(os.path.join(model, "saved_model.pb")):
            raise BatchInputError(f"{model} is not a SavedModel (no saved_model.pb)")
        return model
    version = versions.newest_version(serving_dir) if serving_dir else None
    if version is None:
        raise BatchInputError(f"no pushed model version under {serving_dir}: give --model DIR")
    return versions.version_dir(serving_dir, version)


class _Writer:
    """Parquet or CSV by suffix, appended chunk by chunk, renamed into place when complete."""

    def __init__(self, path: Path):
        if path.suffix not in (".parquet", ".csv"):
            raise BatchInputError(f"{path}: output must end in .parquet or .csv")
        self.path, self.tmp = path, path.with_name(path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parquet = None
        self._header = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.path.suffix == ".csv":
            frame.to_csv(self.tmp, mode="w" if self._header else "a", header=self._header,
                         index=False)
            self._header = False
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, table.schema)
        self._parquet.write_table(table)

    def close(self, columns: list[str]) -> None:
        if self._parquet is None and self._header:  # no good rows: still a well-formed file
            self.write(pd.DataFrame({c: pd.Series(dtype=float if c == "probability" else str)
                                     for c in columns}))
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.replace(self.path)


@dataclass
class BatchSummary:
    model: str
    output: str
    rows: int = 0
    predicted: int = 0
    bad: int = 0
    bad_rows_file: str = ""
    seconds: float = 0.0
    bad_examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second)}


def predict_csv(input_path: Path, output_path: Path, model_dir: str, key: str = ROW_COLUMN,
                chunk_rows: int = 50_000, batch_rows: int = 8192,
                log_every_seconds: float = 10.0, model_version: int | None = None
                ) -> BatchSummary:
    """Scores every good row of `input_path` into `output_path` (key, probability), and
    writes OUTPUT.meta.json: which model and version made them, and the key column (what
    the server needs to answer from them: serving/hybrid.py)."""
    import tensorflow as tf

    from serving import hybrid

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise BatchInputError(f"no such input file: {input_path}")
    from models import problem as P
    from models.model import output_key

    problem = P.from_model(str(model_dir))  # the contract it was trained under
    P.adopt(problem)
    check_columns(input_path, key)
    task = P.current().task
    classes = list(P.current().label.classes)
    predict = tf.saved_model.load(model_dir).signatures["serving_default"]
    summary = BatchSummary(model=model_dir, output=str(output_path))
    writer = _Writer(output_path)
    bad_path = output_path.with_name(output_path.name + ".bad_rows.csv")
    bad_writer = None
    started = last_log = time.monotonic()
    try:
        with open(bad_path, "w", newline="") as bad_file:
            for chunk in read_chunks(input_path, chunk_rows):
                decoded = decode_chunk(chunk, key, first_row=summary.rows + 1)
                summary.rows += len(chunk)
                if decoded.bad:
                    if bad_writer is None:
                        bad_writer = csv.DictWriter(bad_file, fieldnames=list(decoded.bad[0]))
                        bad_writer.writeheader()
                    bad_writer.writerows(decoded.bad)
                    summary.bad += len(decoded.bad)
                    room = BAD_EXAMPLES_SHOWN - len(summary.bad_examples)
                    summary.bad_examples += decoded.bad[:max(room, 0)]
                answers = []
                for start in range(0, len(decoded.keys), batch_rows):
                    batch = to_tensors(decoded.inputs, slice(start, start + batch_rows))
                    answers.append(predict(**batch)[output_key(task)].numpy())
                if answers:
                    columns = answer_columns(np.concatenate(answers), task, classes)
                    writer.write(pd.DataFrame({key: decoded.keys.to_numpy(), **columns}))
                    summary.predicted += len(decoded.keys)
                now = time.monotonic()
                if now - last_log >= log_every_seconds:
                    log.info("%d rows (%d bad) in %.0f s: %.0f rows/s", summary.rows,
                             summary.bad, now - started, summary.rows / (now - started))
                    last_log = now
        writer.close([key, *answer_columns(np.zeros((0, len(classes) or 1)), task, classes)])
    finally:
        if writer.tmp.exists():
            writer.tmp.unlink()
    if summary.bad:
        summary.bad_rows_file = str(bad_path)
    else:
        bad_path.unlink()
    summary.seconds = round(time.monotonic() - started, 2)
    hybrid.write_meta(output_path, hybrid.TableMeta(
        key=key, version=model_version if model_version is not None else
        versions.version_of(model_dir), model=str(model_dir), rows=summary.predicted))
    return summary


def answer_columns(values: np.ndarray, task: str, classes: list[str]) -> dict[str, np.ndarray]:
    """The output columns of a batch of answers: `probability` (binary), `prediction`
    (regression), or `class` and one `probability_<class>` per class (multiclass)."""
    if task == "regression":
        return {"prediction": values.reshape(-1)}
    if task != "multiclass":
        return {"probability": values.reshape(-1)}
    values = values.reshape(-1, len(classes))
    chosen = np.array(classes, dtype=object)[values.argmax(axis=1)] if len(values) else \
        np.array([], dtype=object)
    return {"class": chosen, **{f"probability_{c}": values[:, i] for i, c in enumerate(classes)}}


def describe(summary: BatchSummary) -> str:
    lines = [f"{summary.predicted} predictions from {summary.rows} rows in {summary.seconds} s "
             f"({summary.rows_per_second:,.0f} rows/s) -> {summary.output}",
             f"model: {summary.model}"]
    if summary.bad:
        lines.append(f"{summary.bad} bad rows ({summary.bad / summary.rows:.2%}) not scored, "
                     f"listed in {summary.bad_rows_file}; the first:")
        lines += [f"  row {b[ROW_COLUMN]}: {b['reason']}" for b in summary.bad_examples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.batch_predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="CSV of raw rows (header row)")
    parser.add_argument("--output", type=Path, required=True,
                        help="predictions: .parquet or .csv (key, probability)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--model", help="a SavedModel directory")
    where.add_argument("--serving-dir", help="versioned directory the Pusher writes: its newest "
                                             "version (default: the local pipeline's)")
    parser.add_argument("--key", default=ROW_COLUMN,
                        help=f"input column passed through to join predictions back "
                             f"(default: '{ROW_COLUMN}', the data row number)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01,
                        help="exit 3 when more rows than this are bad (default 0.01)")
    parser.add_argument("--chunk-rows", type=int, default=50_000,
                        help="rows read and scored at a time (default 50000)")
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)

    import models  # noqa: F401  (Keras 2 before TensorFlow)
    from settings.layout import Layout

    config = Layout.load(env=os.environ)

    def work() -> BatchSummary:
        serving_dir = args.serving_dir or (None if args.model else config.serving_dir)
        return predict_csv(args.input, args.output, resolve_model(args.model, serving_dir),
                           key=args.key, chunk_rows=max(1, args.chunk_rows))

    summary, error, log_file = quiet.run_quietly(
        work, args, config.output_root, "batch_predict", ("__main__", "serving.batch_predict"),
        "[batch] %(message)s", (BatchInputError, ValueError))
    if error is not None:
        print(f"[batch] ERROR: {error}", file=sys.stderr)
        return 2
    print(describe(summary))
    print(f"logs: {log_file}")
    if summary.rows and summary.bad / summary.rows > args.max_bad_fraction:
        print(f"[batch] ERROR: {summary.bad / summary.rows:.2%} bad rows is more than "
              f"--max-bad-fraction {args.max_bad_fraction:.2%}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
