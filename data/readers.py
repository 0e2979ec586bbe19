"""Users' files as Arrow batches: CSV the way Excel, R, pandas and warehouses write it, and
Parquet, each file read by pyarrow's C++ readers, in bounded batches.

What a CSV may be: quoted header and fields, newlines inside quoted fields, a UTF-8 byte-order
mark, CRLF, `,` `;` tab or `|` as delimiter (detected from the header line, or set),
compressed as `.gz`, `.bz2` or `.zst` (by extension), columns in any order. Every CSV column
is read as bytes: types come from the schema later (`typed_columns`), never guessed per
file, and bytes that are not UTF-8 reach validation, which names them. A pandas index (a
first column with no name, or `Unnamed: 0`; Parquet's `__index_level_N__`) is dropped with
a note. Anything else that cannot be read raises `InputError`: one line naming the file.

A large file is read in blocks (`blocks`), so that Beam can share one file among workers:
an uncompressed CSV at line ends that are not inside a quoted field (the parity of the
quotes before a line end says so), a Parquet file at row-group boundaries. A compressed
CSV cannot be entered in the middle and is one block.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from data import example_encoding as enc

log = logging.getLogger(__name__)

COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
PARQUET = {".parquet", ".pq"}
DELIMITERS = (",", ";", "\t", "|")
BATCH_BYTES = 1 << 20  # CSV batch size: bounds memory whatever the file's size (benchmarks)
BATCH_ROWS = 8192  # Parquet batch size: about a CSV batch's rows
BLOCK_BYTES = 64 << 20  # a file larger than this is read as several blocks
SCAN_BYTES = 8 << 20  # what the CSV block planner reads at a time
NOT_DATA = {  # magic bytes of files people export by mistake
    b"PK\x03\x04": "a zip archive or an Excel workbook (.xlsx), not CSV: save the sheet as "
                    "CSV",
    b"\xd0\xcf\x11\xe0": "an Excel 97-2003 workbook (.xls), not CSV: save the sheet as CSV",
    b"%PDF": "a PDF document, not CSV",
    b"SQLite format 3": "an SQLite database, not CSV",
}
INDEX = re.compile(r"^(|Unnamed: 0|__index_level_\d+__)$")


class InputError(RuntimeError):
    """A file that cannot be read as data; the message names it and says why."""


def file_format(path: str) -> str:
    """"csv" or "parquet", from the name (a compression extension aside)."""
    base, ext = os.path.splitext(path.lower())
    if ext in COMPRESSION:
        ext = os.path.splitext(base)[1]
    if ext in (".xlsx", ".xls", ".xlsm", ".ods"):
        raise InputError(f"{path}: a spreadsheet workbook, not CSV: save the sheet as CSV "
                         "(File > Save As > CSV UTF-8) or Parquet")
    return "parquet" if ext in PARQUET else "csv"


def span_format(paths: list[str]) -> str:
    """The one format of a span's files; CSV and Parquet mixed in one span are refused."""
    formats = {p: file_format(p) for p in paths}
    if len(set(formats.values())) > 1:
        csv_file = next(p for p, f in formats.items() if f == "csv")
        parquet_file = next(p for p, f in formats.items() if f == "parquet")
        raise InputError(f"{csv_file}: CSV and Parquet files are mixed in one span (e.g. "
                         f"{parquet_file}); keep one format per span")
    return next(iter(formats.values()), "csv")


class _Range(io.RawIOBase):
    """Bytes [start, stop) of a file (all of it by default), local or on a TFX filesystem
    (gs://), as the file object pyarrow reads: a block is never held whole in memory."""

    def __init__(self, path: str, start: int = 0, stop: int | None = None):
        if "://" in path:
            from tfx.dsl.io import fileio

            self._file = fileio.open(path, "rb")
        else:
            self._file = open(path, "rb")  # noqa: SIM115  (closed by close())
        if start:
            self._file.seek(start)
        self._left = None if stop is None else stop - start  # None: to the end

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._left is None:
            return self._file.read(size)
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._file.read(size) if size else b""
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


def _open(path: str):
    stream = pa.input_stream(path, compression=None) if "://" not in path \
        else pa.PythonFile(_Range(path), mode="r")
    ext = os.path.splitext(path.lower())[1]
    if ext in COMPRESSION:
        return pa.CompressedInputStream(stream, COMPRESSION[ext])
    return stream


def _head(path: str, size: int = 65536) -> bytes:
    try:
        with _open(path) as f:
            return f.read(size)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(f"{path}: cannot be read as {_compression_name(path)}: "
                         f"{_first_line(e)}") from e


def _compression_name(path: str) -> str:
    ext = os.path.splitext(path.lower())[1]
    return f"{COMPRESSION[ext]}-compressed data" if ext in COMPRESSION else "a file"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_not_binary(path: str, head: bytes) -> None:
    for magic, what in NOT_DATA.items():
        if head.startswith(magic):
            raise InputError(f"{path}: {what}")
    if head.startswith(b"PAR1"):
        raise InputError(f"{path}: a Parquet file named like CSV: name it .parquet")
    if b"\x00" in head[:8192]:
        raise InputError(f"{path}: binary content (NUL bytes), not CSV text")


def header(path: str, head: bytes, delimiter: str | None = None) -> tuple[list[str], str]:
    """Column names and delimiter, from the header line (BOM and quotes removed)."""
    first = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8-sig", errors="strict")
    if delimiter is None:
        counts = {d: first.count(d) for d in DELIMITERS}
        delimiter = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    names = next(csv.reader(io.StringIO(first), delimiter=delimiter), [])
    return names, delimiter


def _text_header(path: str, head: bytes, delimiter: str | None) -> tuple[list[str], str]:
    """header(), or InputError naming the file when the header line is not UTF-8."""
    try:
        return header(path, head, delimiter)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the header line is not UTF-8 text ({e.reason} at byte "
                         f"{e.start}): export the file as CSV UTF-8") from e


Block = tuple[int, int]  # CSV: [start, stop) in bytes; Parquet: [first, stop) row groups


def blocks(path: str, block_bytes: int = BLOCK_BYTES) -> list[Block | None]:
    """The parts of a file that can be read apart, each about `block_bytes`; [None] when
    the file is read whole (small, compressed, one row group, or `block_bytes` 0)."""
    if block_bytes <= 0:
        return [None]
    if file_format(path) == "parquet":
        return _parquet_blocks(path, block_bytes)
    if os.path.splitext(path.lower())[1] in COMPRESSION:
        return [None]
    size = _size(path)
    if size <= block_bytes:
        return [None]
    cuts = [0, *csv_cuts(path, block_bytes)]
    if cuts[-1] < size:
        cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a] or [None]


def csv_cuts(path: str, block_bytes: int, scan_bytes: int = SCAN_BYTES) -> list[int]:
    """Offsets just after a line end, one per `block_bytes` or a little after, where no
    quoted field is open: an even number of quotes lies before it (RFC 4180 writes a
    quote inside a quoted field as two)."""
    cuts: list[int] = []
    want, quotes, offset = block_bytes, 0, 0
    with _open(path) as f:
        while piece := f.read(scan_bytes):
            counted = 0  # quotes of piece[:counted] are in `quotes`
            while offset + len(piece) > want:
                search = max(counted, want - offset)
                quotes += piece.count(b'"', counted, search)
                counted = search
                while (end := piece.find(b"\n", counted)) >= 0:
                    quotes += piece.count(b'"', counted, end)
                    counted = end + 1
                    if quotes % 2 == 0:
                        cuts.append(offset + counted)
                        want = offset + counted + block_bytes
                        break
                else:  # no free line end in this piece: look on in the next
                    break
            quotes += piece.count(b'"', counted)
            offset += len(piece)
    return cuts


def _size(path: str) -> int:
    if "://" not in path:
        return os.path.getsize(path)
    from tfx.dsl.io import fileio

    return fileio.stat(path).length


def _parquet_blocks(path: str, block_bytes: int) -> list[Block | None]:
    try:
        with _open(path) as f:
            metadata = pq.ParquetFile(f).metadata
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a Parquet file: {_first_line(e)}") from e
    groups = metadata.num_row_groups
    found: list[Block] = []
    start, size = 0, 0
    for group in range(groups):
        size += metadata.row_group(group).total_byte_size
        if size >= block_bytes or group == groups - 1:
            found.append((start, group + 1))
            start, size = group + 1, 0
    return found if len(found) > 1 else [None]


def read_batches(path: str, delimiter: str | None = None,
                 block: Block | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of the file (or of one of its `blocks`) in bounded batches; CSV columns as
    bytes, Parquet's as stored."""
    if file_format(path) == "parquet":
        yield from _parquet_batches(path, block)
        return
    head = _head(path)
    if not head.strip():
        log.warning("%s is empty: no rows", path)
        return
    _check_not_binary(path, head)
    names, delimiter = _text_header(path, head, delimiter)
    duplicated = sorted({n for n in names if names.count(n) > 1 and not INDEX.match(n)})
    if duplicated:
        raise InputError(f"{path}: column(s) {duplicated} appear more than once in the header")
    source = _open(path) if block is None else pa.PythonFile(_Range(path, *block), mode="r")
    try:
        reader = pcsv.open_csv(
            source,
            read_options=pcsv.ReadOptions(column_names=names,
                                          skip_rows=1 if block is None or block[0] == 0 else 0,
                                          block_size=BATCH_BYTES),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={n: pa.binary() for n in names},
                                                check_utf8=False))
        for batch in reader:
            yield _drop_index(path, batch)
    except pa.ArrowInvalid as e:
        raise InputError(f"{path}: not readable as CSV with delimiter {delimiter!r}: "
                         f"{_first_line(e)}") from e


def _parquet_batches(path: str, block: Block | None) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(_open(path))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a Parquet file: {_first_line(e)}") from e
    for field in parquet.schema_arrow:
        if pa.types.is_list(field.type) or pa.types.is_struct(field.type) \
                or pa.types.is_large_list(field.type) or pa.types.is_map(field.type):
            raise InputError(f"{path}: column '{field.name}' holds {field.type}: one value "
                             "per cell is supported")
    groups = None if block is None else list(range(*block))
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=groups):
        yield _drop_index(path, batch)


def _drop_index(path: str, batch: pa.RecordBatch) -> pa.RecordBatch:
    dropped = [n for n in batch.schema.names if INDEX.match(n)]
    if not dropped:
        return batch
    log.info("%s: ignoring the index column(s) %s (a pandas index, not data)", path, dropped)
    keep = [i for i, n in enumerate(batch.schema.names) if not INDEX.match(n)]
    return pa.RecordBatch.from_arrays([batch.column(i) for i in keep],
                                      [batch.schema.names[i] for i in keep])


# ----------------------------------------------------------------- typing by the schema

INT_TEXT = r"^\s*[+-]?\d+\s*$"
FLOAT_TEXT = (r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[iI][nN][fF]([iI][nN][iI][tT][yY])?"
              r"|[nN][aA][nN])\s*$")


def _text(column: pa.Array) -> pa.Array:
    """A column as trimmed text ("" for no value); numbers as written by str()."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        column = column.cast(pa.large_string(), safe=False)
    elif pa.types.is_timestamp(column.type):
        column = pc.cast(column.cast(pa.timestamp("s")), pa.int64())
    if pa.types.is_boolean(column.type):
        column = column.cast(pa.int64())
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.large_string())
    return pc.fill_null(pc.utf8_trim_whitespace(column), "")


def profile(column: pa.Array) -> dict[str, int]:
    """What pass one learns of a column: rows, values, and values that are not integers /
    not numbers (text as written; a float that is whole, like pandas' `60.0`, is an
    integer)."""
    text = _text(column)
    present = pc.not_equal(text, "")
    values = pc.sum(present).as_py() or 0
    is_int = pc.match_substring_regex(text, INT_TEXT)
    is_float = pc.match_substring_regex(text, FLOAT_TEXT)
    whole = _whole(text, pc.and_(is_float, pc.invert(is_int)))
    return {"rows": len(column), "values": values,
            "not_int": values - (pc.sum(pc.or_(is_int, whole)).as_py() or 0),
            "not_float": values - (pc.sum(is_float).as_py() or 0)}


def _whole(text: pa.Array, candidates: pa.Array) -> pa.Array:
    numbers = pc.cast(pc.if_else(candidates, text, "0"), pa.float64())
    finite = pc.is_finite(numbers)
    return pc.and_(candidates, pc.and_(finite, pc.equal(pc.floor(numbers), numbers)))


def kind_of(schema_type: str | None, stats: dict[str, int]) -> str:
    """The feature kind a column is written as: its schema type when every value parses as
    it; otherwise what CsvExampleGen would infer (a column with text becomes BYTES, and
    validation names the type mismatch); ABSENT when no row has a value."""
    if stats["values"] == 0:
        return enc.ABSENT
    if schema_type == enc.BYTES:
        return enc.BYTES
    if schema_type in (None, enc.INT) and stats["not_int"] == 0:
        return enc.INT
    if stats["not_float"] == 0:
        return enc.FLOAT
    return enc.BYTES


def text(column: pa.Array) -> pa.Array:
    """A column's cells as trimmed text ("" where empty), whatever type it was read as."""
    return _text(column)


def typed_columns(batch: pa.RecordBatch, kinds: dict[str, str]) -> list[enc.Column]:
    """The batch's columns as the encoder takes them; a column that this file lacks is
    written without values."""
    rows, columns = batch.num_rows, []
    present = dict(zip(batch.schema.names, batch.columns, strict=True))
    for name, kind in kinds.items():
        column = present.get(name)
        if kind == enc.ABSENT:
            columns.append(enc.Column(name, kind))
            continue
        if column is None:
            columns.append(enc.Column(name, kind, _empty(kind, rows), np.zeros(rows, bool)))
            continue
        if kind == enc.BYTES:
            raw = column
            if not (pa.types.is_binary(raw.type) or pa.types.is_large_binary(raw.type)):
                raw = pc.fill_null(_text_untrimmed(raw), "").cast(pa.large_binary())
            raw = pc.fill_null(raw.cast(pa.large_binary()), b"")
            valid = pc.not_equal(pc.binary_length(raw), 0).to_numpy(zero_copy_only=False)
            columns.append(enc.Column(name, kind, raw, valid))
            continue
        text = _text(column)
        valid = pc.not_equal(text, "")
        if kind == enc.FLOAT:
            numbers = pc.cast(pc.if_else(valid, text, "0"), pa.float64())
            values = numbers.to_numpy(zero_copy_only=False).astype(np.float32)
        else:
            unsigned = pc.replace_substring_regex(text, r"^\+", "")
            is_int = pc.match_substring_regex(unsigned, r"^-?\d+$")
            ints = pc.cast(pc.if_else(is_int, unsigned, "0"), pa.int64())
            whole = pc.cast(pc.cast(pc.if_else(pc.and_(valid, pc.invert(is_int)), text, "0"),
                                    pa.float64()), pa.int64())
            values = pc.if_else(is_int, ints, whole).to_numpy(zero_copy_only=False)
        columns.append(enc.Column(name, kind, values,
                                  valid.to_numpy(zero_copy_only=False).astype(bool)))
    return columns


def _text_untrimmed(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column.cast(pa.large_string())


def _empty(kind: str, rows: int):
    if kind == enc.BYTES:
        return pa.array([b""] * rows, pa.large_binary())
    return np.zeros(rows, np.float32 if kind == enc.FLOAT else np.int64)


def columns_of(path: str, delimiter: str | None = None) -> list[str]:
    """A file's column names, read from its header (CSV) or footer (Parquet) only."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        try:
            return [n for n in pq.read_schema(_open(path)).names if not INDEX.match(n)]
        except (pa.ArrowInvalid, OSError):  # not Parquet after all: the reader says so
            return []
    head = _head(path)
    if not head.strip():
        return []
    _check_not_binary(path, head)
    names, _ = _text_header(path, head, delimiter)
    return [n for n in names if not INDEX.match(n)]


DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")


def check_against_schema(paths: list[str], types: dict[str, str], delimiter: str | None,
                         time_column: str = "", time_format: str = "unix_seconds",
                         problem_hint: str = "") -> None:
    """Whole-file causes, said in one line before any row is read (InputError): none of the
    schema's columns in a file (another dataset?), a header that differs from the schema in
    case or spacing only, numbers written with decimal commas (a locale's export), a time
    column whose values are not times. The data gate names everything else."""
    expected = set(types)
    if not expected:
        return
    folded = {re.sub(r"\s+", "", n).casefold(): n for n in expected}
    for path in paths:
        names = columns_of(path, delimiter)
        if not names:
            continue
        found = expected & set(names)
        near = {n: folded[re.sub(r"\s+", "", n).casefold()] for n in names
                if n not in expected and re.sub(r"\s+", "", n).casefold() in folded}
        near = {n: s for n, s in near.items() if s not in found}
        if near:
            shown = ", ".join(f"{n!r} is {s!r} there" for n, s in list(near.items())[:5])
            raise InputError(f"{path}: the header differs from the schema in case or spacing "
                             f"({shown}): rename the columns, or write the schema for this "
                             "data")
        if not found:
            raise InputError(
                f"{path}: none of the problem's {len(expected)} columns are here (it has "
                f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''}; the schema "
                f"expects {', '.join(sorted(expected)[:8])}{', ...' if len(expected) > 8 else ''}"
                f"). Another dataset? {problem_hint}")
    first = next((p for p in paths if file_format(p) != "parquet"), None)
    if first is None:
        return
    batch = next(iter(read_batches(first, delimiter)), None)
    if batch is None:
        return
    sample = batch.slice(0, 2000)
    for name in sample.schema.names:
        if types.get(name) not in (enc.INT, enc.FLOAT):
            continue
        values = [v for v in text(sample.column(name)).to_pylist() if v]
        commas = [v for v in values if DECIMAL_COMMA.match(v)]
        if values and len(commas) > len(values) / 2:
            raise InputError(f"{first}: column {name!r} holds numbers with decimal commas "
                             f"({commas[0]!r}): a locale's export; write the file with '.' "
                             "decimals (and ',' or ';' between columns)")
    if time_column and time_column in sample.schema.names:
        values = [v for v in text(sample.column(time_column)).to_pylist() if v]
        if values and time_format == "unix_seconds":
            bad = [v for v in values if not re.match(r"^[+-]?\d+(\.0*)?$", v)]
            if len(bad) > len(values) / 2:
                raise InputError(f"{first}: time column {time_column!r} holds {bad[0]!r}, "
                                 "not UNIX seconds; if it is a date or ISO 8601 time, say "
                                 "`time: {column: ..., format: iso8601}` in problem.yaml")
        elif values:
            _, valid = iso_seconds(values)
            if (~valid).mean() > 0.5:
                raise InputError(f"{first}: time column {time_column!r} holds "
                                 f"{values[int((~valid).argmax())]!r}, not an ISO 8601 time")


ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
                      r"(?:Z|[+-]\d{2}(?::?\d{2})?)?$")


def iso_seconds(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(UNIX seconds, valid) of ISO 8601 dates and times (`2023-12-31`, `2023-12-31
    20:11:50`, `...T20:11:50Z`, `+02:00`); a time without a zone is UTC. A value that is not
    ISO 8601 is invalid, never guessed at."""
    import pandas as pd

    iso = np.array([bool(ISO_8601.match(v or "")) for v in values], dtype=bool)
    seconds = np.zeros(len(values), np.int64)
    if iso.any():
        chosen = pd.Series([v.replace(",", ".") for v, ok in zip(values, iso, strict=True)
                            if ok])
        parsed = pd.to_datetime(chosen, utc=True, errors="coerce")
        good = parsed.notna().to_numpy()
        stamps = parsed.astype("int64").to_numpy() // 10**9
        where = np.flatnonzero(iso)
        seconds[where[good]] = stamps[good]
        iso[where[~good]] = False
    return seconds, iso
