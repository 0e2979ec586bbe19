"""Columns of one value per cell to serialized tf.Examples, vectorised, in deterministic form.

Why not tfx_bsl's `RecordBatchToExamples`: it writes each example's feature map in hash
order, and ExampleGen splits by a hash of the *deterministic* serialization (keys sorted),
so a split assignment identical to TFX's `CsvExampleGen` would need every example parsed
and serialized again in Python, tens of seconds per million rows (benchmarks/README.md,
ExampleGen). Here the deterministic bytes are assembled with numpy: each example is a
sequence of parts (tags, varint lengths, values), each part a byte string per row (empty
where it does not apply), and one gather lays all parts out row after row. The records are
byte for byte what `tf.train.Example.SerializeToString(deterministic=True)` gives, and the
split key is the record itself, as in TFX.

A column is one of: FLOAT (float32 values), INT (int64), BYTES, each with a validity mask
(a cell without a value becomes the typed feature with an empty list, as CsvExampleGen
writes an empty cell), or ABSENT (a feature with no kind: CsvExampleGen's column that has
no value anywhere in the split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FLOAT, INT, BYTES, ABSENT = "FLOAT", "INT", "BYTES", "ABSENT"
# Feature's oneof field tags (bytes_list = 1, float_list = 2, int64_list = 3), wire type 2.
_LIST_TAG = {BYTES: 0x0A, FLOAT: 0x12, INT: 0x1A}


@dataclass(frozen=True)
class Column:
    """One feature of a block: `values` (numpy for numbers, an Arrow binary array for BYTES)
    with `valid` (bool numpy; False = the cell has no value)."""

    name: str
    kind: str
    values: np.ndarray | pa.Array | None = None
    valid: np.ndarray | None = None


@dataclass
class Part:
    """Bytes per row, left-aligned in a (rows, width) matrix: row r's are
    matrix[r, :lengths[r]]."""

    matrix: np.ndarray  # uint8
    lengths: np.ndarray  # int64


def varint_lengths(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.int64).view(np.uint64) if values.dtype.kind == "i" \
        else values.astype(np.uint64)
    lengths = np.ones(len(v), dtype=np.int64)
    if len(v) and v.max() < 128:
        return lengths
    for shift in range(7, 64, 7):
        lengths += (v >> np.uint64(shift)) > 0
    return lengths


def varints(values: np.ndarray, mask: np.ndarray | None = None) -> Part:
    """Protobuf varints (negative int64 as ten bytes, as int64 fields encode them); rows
    outside `mask` get none."""
    v = values.astype(np.int64).view(np.uint64) if values.dtype.kind == "i" \
        else values.astype(np.uint64)
    lengths = varint_lengths(v)
    width = int(lengths.max()) if len(v) else 1
    matrix = np.empty((len(v), width), dtype=np.uint8)
    rest = v.copy()
    for i in range(width):
        more = (i < lengths - 1).astype(np.uint8) << 7
        matrix[:, i] = (rest & np.uint64(0x7F)).astype(np.uint8) | more
        rest >>= np.uint64(7)
    return Part(matrix, lengths if mask is None else lengths * mask)


def constant(value: bytes, rows: int, mask: np.ndarray | None = None) -> Part:
    matrix = np.broadcast_to(np.frombuffer(value, dtype=np.uint8), (rows, len(value)))
    lengths = np.full(rows, len(value), dtype=np.int64)
    return Part(matrix, lengths if mask is None else lengths * mask)


def _binary_part(values: pa.Array, mask: np.ndarray) -> Part:
    """The bytes of a binary array's rows inside `mask`, padded to the longest."""
    values = values.cast(pa.large_binary())
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[values.offset:
                                                             values.offset + len(values) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None \
        else np.zeros(0, dtype=np.uint8)
    lengths = np.diff(offsets) * mask
    width = int(lengths.max()) if len(lengths) else 0
    if width == 0:
        return Part(np.zeros((len(lengths), 0), dtype=np.uint8), lengths)
    index = np.minimum(offsets[:-1, None] + np.arange(width)[None, :], len(data) - 1)
    return Part(data[index], lengths)


def concat(parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    """Row r of the result is row r of every part, in order: (offsets, data)."""
    matrix = np.hstack([p.matrix for p in parts])
    keep = np.hstack([np.arange(p.matrix.shape[1])[None, :] < p.lengths[:, None]
                      for p in parts])
    totals = np.sum([p.lengths for p in parts], axis=0)
    offsets = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)
    return offsets, matrix[keep]


def _feature(column: Column, rows: int) -> tuple[list[Part], np.ndarray]:
    """Each row's serialized tf.train.Feature as parts, and its length."""
    if column.kind == ABSENT:
        return [], np.zeros(rows, dtype=np.int64)
    valid = np.asarray(column.valid, dtype=bool)
    tag = _LIST_TAG[column.kind]
    empty = constant(bytes([tag, 0]), rows, ~valid)
    if column.kind == FLOAT:  # <tag> 06 0a 04 <4 bytes little-endian>
        values = np.ascontiguousarray(np.asarray(column.values, dtype="<f4"))
        parts = [constant(bytes([tag, 6, 0x0A, 4]), rows, valid),
                 Part(values.view(np.uint8).reshape(rows, 4), valid * np.int64(4))]
        return parts + [empty], np.where(valid, 8, 2)
    if column.kind == INT:  # <tag> <n + 2> 0a <n> <varint of n bytes>
        values = np.asarray(column.values, dtype=np.int64)
        n = varint_lengths(values)
        parts = [constant(bytes([tag]), rows, valid), varints(n + 2, valid),
                 constant(b"\x0a", rows, valid), varints(n, valid), varints(values, valid)]
        return parts + [empty], np.where(valid, n + 4, 2)
    # <tag> <len(inner)> [inner: 0a <len(s)> <s>]
    strings = _binary_part(column.values, valid)
    raw = strings.lengths
    inner = 1 + varint_lengths(raw) + raw
    parts = [constant(bytes([tag]), rows, valid), varints(inner, valid),
             constant(b"\x0a", rows, valid), varints(raw, valid), strings]
    return parts + [empty], np.where(valid, 1 + varint_lengths(inner) + inner, 2)


CHUNK_ROWS = 32768  # rows laid out at a time: bounds the (rows, bytes per row) matrix
CHUNK_BYTES = 1 << 23  # ... and so does this, for long strings (a free-text column)


def chunk_rows(columns: list[Column]) -> int:
    """Rows per chunk so that the padded matrix stays near CHUNK_BYTES: its width is the
    longest row, which long strings dominate."""
    width = 32 * len(columns)  # keys, tags and numbers: a few dozen bytes a feature
    for c in columns:
        if c.kind == BYTES and len(c.values):
            width += int(pc.max(pc.binary_length(c.values)).as_py() or 0)
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // width))


def serialize(columns: list[Column], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Serialized tf.Examples, one per row, keys sorted as deterministic serialization
    sorts them: (offsets, data), row r = data[offsets[r]:offsets[r+1]]."""
    step = chunk_rows(columns)
    if rows <= step:
        return _serialize(columns, rows)
    offsets, data, base = [np.zeros(1, dtype=np.int64)], [], 0
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        chunk = [Column(c.name, c.kind, None if c.values is None else c.values[start:stop],
                        None if c.valid is None else c.valid[start:stop]) for c in columns]
        chunk_offsets, chunk_data = _serialize(chunk, stop - start)
        offsets.append(chunk_offsets[1:] + base)
        data.append(chunk_data)
        base += len(chunk_data)
    return np.concatenate(offsets), np.concatenate(data)


def _serialize(columns: list[Column], rows: int) -> tuple[np.ndarray, np.ndarray]:
    if rows == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    entries: list[Part] = []
    features_length = np.zeros(rows, dtype=np.int64)
    for column in sorted(columns, key=lambda c: c.name.encode("utf-8")):
        feature_parts, feature_length = _feature(column, rows)
        key = column.name.encode("utf-8")
        head = b"\x0a" + _varint(len(key)) + key + b"\x12"
        entry_length = len(head) + varint_lengths(feature_length) + feature_length
        entries += [constant(b"\x0a", rows), varints(entry_length), constant(head, rows),
                    varints(feature_length)] + feature_parts
        features_length += 1 + varint_lengths(entry_length) + entry_length
    return concat([constant(b"\x0a", rows), varints(features_length)] + entries)


def _varint(n: int) -> bytes:
    part = varints(np.array([n], dtype=np.int64))
    return part.matrix[0, :part.lengths[0]].tobytes()


def to_arrow(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])
