"""ArrowExampleGen's executor on real Beam: the bundled CSV gives CsvExampleGen's records in
CsvExampleGen's splits, byte for byte; the same rows written the way users' tools write them
give the same records; files it cannot read stop with one line naming them."""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as keys
from tfx.utils import proto_utils

from data import bundled, readers
from models import features as F
from pipeline.components import arrow_example_gen
from settings.layout import SCHEMA_FILE

ROWS = 3000

# TFX's own default: 3 of 4 hash buckets train, 1 eval.
HASH_SPLIT = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
    example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=3),
    example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)]))


def run(executor, input_base: Path, out: Path, **settings) -> Path:
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    component = arrow_example_gen.ArrowExampleGen(
        input_base=str(input_base), schema_file=str(SCHEMA_FILE), **settings)
    properties = {
        keys.INPUT_BASE_KEY: str(input_base),
        keys.INPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="single_split", pattern="*")])),
        keys.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(HASH_SPLIT),
        keys.CUSTOM_CONFIG_KEY: component.exec_properties[keys.CUSTOM_CONFIG_KEY],
    }
    executor().Do({}, {keys.EXAMPLES_KEY: [examples]}, properties)
    return out


def records(uri: Path, split: str) -> list[bytes]:
    files = sorted(glob.glob(f"{uri}/Split-{split}/*"))
    return sorted(tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
                  for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """3,000 bundled rows as a plain CSV, and what ArrowExampleGen makes of them."""
    root = tmp_path_factory.mktemp("users-data")
    bundled.write_sample(bundled.materialize(), root / "plain", ROWS, seed=11)
    out = run(arrow_example_gen.Executor, root / "plain", root / "plain-out")
    header, rows = bundled.read_rows(root / "plain" / "data.csv")
    return root, header, rows, {s: records(out, s) for s in ("train", "eval")}


def test_the_bundled_csv_gives_csv_example_gens_records_in_its_splits(tmp_path):
    source = bundled.materialize().parent
    ours = run(arrow_example_gen.Executor, source, tmp_path / "arrow")
    theirs = run(csv_executor.Executor, source, tmp_path / "csv")
    for split in ("train", "eval"):
        raw = sorted(r.numpy() for r in tf.data.TFRecordDataset(
            glob.glob(f"{ours}/Split-{split}/*"), compression_type="GZIP"))
        assert raw == records(theirs, split)  # written deterministically, byte for byte
    ingest = json.loads((ours / "ingest.json").read_text())[0]
    assert ingest["rows"] == 15002 and ingest["format"] == "csv"
    assert sum(ingest["rows_per_split"].values()) == 15002
    assert ingest["kinds"]["fare"] == "FLOAT" and ingest["kinds"]["company"] == "BYTES"


def _write(path: Path, header: list[str], rows: list[dict], opener=open, **dialect) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", newline="", encoding=dialect.pop("encoding", "utf-8")) as f:
        writer = csv.DictWriter(f, fieldnames=header, **dialect)
        writer.writeheader()
        writer.writerows(rows)


def _zstd_open(path, mode, newline, encoding):
    import io

    import zstandard

    raw = open(path, "wb")  # noqa: SIM115 - closed with the text wrapper
    return io.TextIOWrapper(zstandard.ZstdCompressor().stream_writer(raw), encoding=encoding,
                            newline=newline)


SHAPES = {
    "quoted header and fields, CRLF (R's write.csv)":
        lambda p, h, r: _write(p / "data.csv", h, r, quoting=csv.QUOTE_ALL, lineterminator="\r\n"),
    "UTF-8 byte-order mark (Excel's CSV UTF-8)":
        lambda p, h, r: _write(p / "data.csv", h, r, encoding="utf-8-sig"),
    "semicolons (a European Excel)":
        lambda p, h, r: _write(p / "data.csv", h, r, delimiter=";"),
    "tabs": lambda p, h, r: _write(p / "data.tsv", h, r, delimiter="\t"),
    "gzip": lambda p, h, r: _write(p / "data.csv.gz", h, r, opener=gzip.open),
    "bz2": lambda p, h, r: _write(p / "data.csv.bz2", h, r, opener=bz2.open),
    "zstd": lambda p, h, r: _write(p / "data.csv.zst", h, r, opener=_zstd_open),
    "columns in another order": lambda p, h, r: _write(p / "data.csv", sorted(h), r),
    "two files with their columns in different orders":
        lambda p, h, r: (_write(p / "a.csv", h, r[:1000]),
                         _write(p / "b.csv", list(reversed(h)), r[1000:])),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_users_exports_give_the_same_records_as_the_plain_csv(sample, shape, tmp_path):
    _, header, rows, expected = sample
    SHAPES[shape](tmp_path / "in", header, rows)
    out = run(arrow_example_gen.Executor, tmp_path / "in", tmp_path / "out")
    assert sum(len(records(out, s)) for s in expected) == ROWS
    if shape == "two files with their columns in different orders":  # split per file
        assert sorted(records(out, "train") + records(out, "eval")) == \
            sorted(expected["train"] + expected["eval"])
    else:
        assert {s: records(out, s) for s in expected} == expected


def test_pandas_csv_with_its_index_and_parquet_give_the_same_records(sample, tmp_path):
    root, _, _, expected = sample
    frame = pd.read_csv(root / "plain" / "data.csv")  # ints with gaps become floats: 60.0
    for name in ("csv", "parquet"):
        (tmp_path / name).mkdir()
    frame.to_csv(tmp_path / "csv" / "data.csv")  # with the index, as pandas does by default
    assert (tmp_path / "csv" / "data.csv").read_text().startswith(",")
    assert ".0," in (tmp_path / "csv" / "data.csv").read_text()
    frame.to_parquet(tmp_path / "parquet" / "data.parquet")
    for name in ("csv", "parquet"):
        out = run(arrow_example_gen.Executor, tmp_path / name, tmp_path / f"{name}-out")
        assert {s: records(out, s) for s in expected} == expected, name


def test_a_quoted_value_across_lines_and_latin1_bytes_are_kept(sample, tmp_path):
    _, header, rows, _ = sample
    odd = [dict(r) for r in rows[:50]]
    odd[0]["company"] = "Taxi Affiliation\nServices"
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "data.csv", "w", newline="", encoding="latin-1") as f:
        odd[1]["company"] = "Café Cab"
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(odd)
    out = run(arrow_example_gen.Executor, tmp_path / "in", tmp_path / "out")
    companies = {v for s in ("train", "eval") for r in records(out, s)
                 for v in tf.train.Example.FromString(r).features.feature["company"]
                 .bytes_list.value}
    assert b"Taxi Affiliation\nServices" in companies
    assert "Café Cab".encode("latin-1") in companies  # not UTF-8: the gate names it


def test_text_in_a_numeric_column_is_written_as_text_for_validation_to_name(sample, tmp_path):
    _, header, rows, _ = sample
    bad = [dict(r) for r in rows[:200]]
    for row in bad[:5]:
        row["fare"] = "N/A"
    _write(tmp_path / "in" / "data.csv", header, bad)
    out = run(arrow_example_gen.Executor, tmp_path / "in", tmp_path / "out")
    ingest = json.loads((out / "ingest.json").read_text())[0]
    assert ingest["kinds"]["fare"] == "BYTES"
    assert ingest["not_parsed"] == [
        "column 'fare': 5 of 200 value(s) are not FLOAT as the schema says: written as BYTES, "
        "so validation stops the run and names it"]


def test_empty_files_give_no_rows(sample, tmp_path):
    _, header, _, _ = sample
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.csv").write_bytes(b"")
    _write(tmp_path / "in" / "header.csv", header, [])
    out = run(arrow_example_gen.Executor, tmp_path / "in", tmp_path / "out")
    assert records(out, "train") == [] and records(out, "eval") == []


UNREADABLE = {
    "data.xlsx": (b"PK\x03\x04" + os.urandom(200), "a spreadsheet workbook, not CSV"),
    "data.csv": (b"PK\x03\x04" + os.urandom(200), "(.xlsx), not CSV: save the sheet"),
    "garbage.csv": (b"a,b\n" + bytes(range(256)) * 8, "binary content (NUL bytes)"),
    "data.csv.gz": (b"not gzip at all", "cannot be read as gzip-compressed data"),
    "data.parquet": (b"a,b\n1,2\n", "not a Parquet file"),
}


@pytest.mark.parametrize("name", UNREADABLE)
def test_a_file_it_cannot_read_raises_one_line_naming_it(tmp_path, name):
    content, cause = UNREADABLE[name]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(content)
    with pytest.raises(readers.InputError) as raised:
        run(arrow_example_gen.Executor, tmp_path / "in", tmp_path / "out")
    message = str(raised.value).split(" [while running")[0]
    assert str(tmp_path / "in" / name) in message and cause in message


def test_csv_and_parquet_mixed_in_one_span_are_refused(sample, tmp_path):
    root, _, _, _ = sample
    (tmp_path / "in").mkdir()
    shutil.copy(root / "plain" / "data.csv", tmp_path / "in" / "a.csv")
    pd.read_csv(root / "plain" / "data.csv").to_parquet(tmp_path / "in" / "b.parquet")
    with pytest.raises(readers.InputError, match="CSV and Parquet files are mixed in one span"):
        run(arrow_example_gen.Executor, tmp_path / "in", tmp_path / "out")


def _awkward_rows(rows: list[dict]) -> list[dict]:
    """Line ends and quotes inside quoted fields, where a naive block cut would land."""
    odd = [dict(r) for r in rows]
    for row in odd[::37]:
        row["company"] = 'Taxi "Best"\nAffiliation\r\nServices, "Inc"'
    return odd


def test_block_cuts_are_line_ends_outside_quoted_fields(sample, tmp_path):
    _, header, rows, _ = sample
    path = tmp_path / "data.csv"
    _write(path, header, _awkward_rows(rows), quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    content = path.read_bytes()
    # A small scan window, so that quoted fields and line ends straddle its edges.
    cuts = readers.csv_cuts(str(path), block_bytes=20_000, scan_bytes=997)
    assert len(cuts) >= len(content) // 20_000 - 1
    for cut in cuts:
        assert content[cut - 1:cut] == b"\n" and content[:cut].count(b'"') % 2 == 0
    blocks = readers.blocks(str(path), block_bytes=20_000)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(content)

    def rows_of(batches) -> list[tuple]:
        return [r for b in batches for r in zip(*b.to_pydict().values(), strict=True)]

    read = [rows_of(readers.read_batches(str(path), None, block)) for block in blocks]
    assert [r for block in read for r in block] == rows_of(readers.read_batches(str(path)))


def test_large_csv_and_parquet_read_in_blocks_give_the_records_of_a_whole_read(sample, tmp_path):
    _, header, rows, _ = sample
    _write(tmp_path / "csv" / "data.csv", header, _awkward_rows(rows), quoting=csv.QUOTE_ALL,
           lineterminator="\r\n")
    (tmp_path / "parquet").mkdir()
    pd.read_csv(tmp_path / "csv" / "data.csv", dtype=str, keep_default_na=False).to_parquet(
        tmp_path / "parquet" / "data.parquet", row_group_size=250)
    for name in ("csv", "parquet"):
        whole = run(arrow_example_gen.Executor, tmp_path / name, tmp_path / f"{name}-whole",
                    block_bytes=0)
        blocks = run(arrow_example_gen.Executor, tmp_path / name, tmp_path / f"{name}-blocks",
                     block_bytes=50_000)
        ingest = json.loads((blocks / "ingest.json").read_text())[0]
        assert ingest["blocks"] >= 4 and ingest["rows"] == ROWS, name
        assert json.loads((whole / "ingest.json").read_text())[0]["blocks"] == 1
        for split in ("train", "eval"):
            assert records(blocks, split) == records(whole, split), (name, split)
        assert len(glob.glob(f"{blocks}/Split-train/*")) == ingest["blocks"]


def test_a_file_on_a_tfx_filesystem_is_read_whole_and_in_blocks(sample, tmp_path):
    """gs:// in production; TensorFlow's in-memory `ram://` filesystem here."""
    _, header, rows, _ = sample
    local = tmp_path / "data.csv"
    _write(local, header, _awkward_rows(rows), quoting=csv.QUOTE_ALL)
    remote = f"ram://{tmp_path.name}/data.csv"
    tf.io.gfile.makedirs(os.path.dirname(remote))
    tf.io.gfile.copy(str(local), remote, overwrite=True)

    def rows_of(path: str, block_bytes: int) -> list[tuple]:
        return [r for block in readers.blocks(path, block_bytes)
                for b in readers.read_batches(path, None, block)
                for r in zip(*b.to_pydict().values(), strict=True)]

    assert len(readers.blocks(remote, 40_000)) > 2
    assert rows_of(remote, 40_000) == rows_of(remote, 0) == rows_of(str(local), 0)
    assert len(rows_of(remote, 0)) == ROWS


def _times(uri: Path, split: str) -> list[int]:
    return [tf.train.Example.FromString(r).features.feature[F.TIME_COLUMN].int64_list.value[0]
            for r in records(uri, split)]


def test_the_time_split_evaluates_on_rows_newer_than_every_training_row(tmp_path):
    """On the bundled data: the eval split is the newest quarter of the trips."""
    source = bundled.materialize().parent
    out = run(arrow_example_gen.Executor, source, tmp_path / "by-time",
              by_time=arrow_example_gen.TimeSplit(F.TIME_COLUMN, eval_fraction=0.25))
    train, evaluation = _times(out, "train"), _times(out, "eval")
    assert len(train) + len(evaluation) == 15002
    assert max(train) < min(evaluation)
    assert 0.24 < len(evaluation) / 15002 < 0.27  # whole hours go to one side
    split = json.loads((out / "ingest.json").read_text())[0]["split"]
    assert split["by"] == "time" and split["eval_from"] == min(evaluation) // 3600 * 3600
    assert split["gap_rows"] == 0 and split["no_time_rows"] == 0


def test_a_gap_and_a_period_leave_the_rows_between_out_and_count_them(tmp_path):
    source = bundled.materialize().parent
    out = run(arrow_example_gen.Executor, source, tmp_path / "gap",
              by_time=arrow_example_gen.TimeSplit(F.TIME_COLUMN, eval_days=365, gap_days=30))
    train, evaluation = _times(out, "train"), _times(out, "eval")
    split = json.loads((out / "ingest.json").read_text())[0]["split"]
    assert split["eval_from"] - split["train_before"] == 30 * 86400
    assert max(train) < split["train_before"] <= split["eval_from"] <= min(evaluation)
    assert max(evaluation) - split["eval_from"] < 365 * 86400
    assert len(train) + len(evaluation) + split["gap_rows"] == 15002 and split["gap_rows"] > 0


def test_a_period_longer_than_the_data_is_refused_with_the_reason(tmp_path):
    source = bundled.materialize().parent
    with pytest.raises(Exception, match="no earlier rows to train on"):
        run(arrow_example_gen.Executor, source, tmp_path / "too-long",
            by_time=arrow_example_gen.TimeSplit(F.TIME_COLUMN, eval_days=4000))
