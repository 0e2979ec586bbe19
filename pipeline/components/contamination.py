"""Rows under a contamination mark (control/marks.py) left out of a split's files.

SpanExamples applies the active marks to this run's span, and SpanWindow to every older span
it gathers, so no component after them sees a marked row: not StatisticsGen (the drift
check), not Transform, the Trainer or the Evaluator. A split no mark touches is hard-linked
as before; one that a mark touches is rewritten without those rows, record for record. What
was left out is counted by mark in `contamination.json` beside the splits, which the run
summary reads and the Trainer copies into the model's record.
"""

import json
import os

import numpy as np
import tensorflow as tf
from tfx.dsl.io import fileio

from control import marks as marks_lib
from reporting.artifacts import CONTAMINATION_FILE

BATCH = 8192


def active(marks_json: str, control_dir: str) -> list[marks_lib.Mark]:
    """The marks in force when the step runs: the control folder's audit log, which holds
    every mark and every removal (a job compiled before a mark honours it, and one compiled
    before a removal no longer does); without a folder, those given when it was built."""
    if control_dir:
        return marks_lib.active(control_dir)
    return marks_lib.from_json(marks_json)


def digest(marks: list[marks_lib.Mark]) -> str:
    """A short digest of the marks rows were cleaned of: part of the cache keys of what was
    computed from those rows."""
    import hashlib

    return hashlib.sha256(marks_lib.to_json(sorted(marks, key=lambda m: m.id)).encode()
                          ).hexdigest()[:16] if marks else ""


def _columns(records: list[bytes], names: set[str]) -> dict[str, np.ndarray]:
    """The first value of each named feature per record (None where absent)."""
    from tfx_bsl.coders import example_coder

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
    out = {}
    for name in names:
        index = batch.schema.get_field_index(name)
        values = np.full(len(records), None, dtype=object)
        if index >= 0:
            for i, cell in enumerate(batch.column(index).to_pylist()):
                if cell:
                    values[i] = cell[0]
        out[name] = values
    return out


def left_out(records: list[bytes], marks: list[marks_lib.Mark],
             counts: dict[str, int] | None = None) -> np.ndarray:
    """Which of these serialized tf.Examples a mark covers (the first mark that covers a
    row is counted in `counts`)."""
    names = {m.column for m in marks} | {k for m in marks for k in m.where}
    columns = _columns(records, names)
    out = np.zeros(len(records), bool)
    for mark in marks:
        time = np.array([np.nan if v is None else float(v) for v in columns[mark.column]])
        hit = mark.covers(time, columns) & ~out
        if counts is not None:
            counts[mark.id] = counts.get(mark.id, 0) + int(hit.sum())
        out |= hit
    return out


def filter_files(files: list[str], dest_dir: str, marks: list[marks_lib.Mark],
                 prefix: str = "") -> dict[str, int]:
    """Copies `files` (gzipped tf.Example records) into `dest_dir` without the rows any of
    `marks` covers; returns the rows each mark left out."""
    fileio.makedirs(dest_dir)
    counts = dict.fromkeys((m.id for m in marks), 0)
    for path in files:
        target = os.path.join(dest_dir, f"{prefix}-{os.path.basename(path)}" if prefix
                              else os.path.basename(path))
        with tf.io.TFRecordWriter(target, "GZIP") as writer:
            data = tf.data.TFRecordDataset(path, compression_type="GZIP").batch(BATCH)
            for records in data.as_numpy_iterator():
                records = list(records)
                for record, out in zip(records, left_out(records, marks, counts), strict=True):
                    if not out:
                        writer.write(record)
    return counts


def record(uri: str, marks: list[marks_lib.Mark], counts: dict[str, int]) -> dict:
    """contamination.json beside the splits: the marks honoured and the rows each left out."""
    result = {"marks": [{"id": m.id, "describe": m.describe()} for m in marks],
              "excluded": counts, "rows": sum(counts.values())}
    with fileio.open(os.path.join(uri, CONTAMINATION_FILE), "w") as f:
        json.dump(result, f, indent=1)
    return result


def read(uri: str) -> dict:
    path = os.path.join(uri, CONTAMINATION_FILE)
    if not fileio.exists(path):
        return {}
    with fileio.open(path) as f:
        return json.load(f)
