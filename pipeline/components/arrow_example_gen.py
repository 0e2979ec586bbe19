"""ArrowExampleGen: users' CSV and Parquet files to the standard `Examples` artifact, at Arrow
speed.

TFX's FileBasedExampleGen with this executor: its driver resolves spans, versions and
`RangeConfig` as for CsvExampleGen, and the artifact out is the same (tf.Example GZIP
TFRecords in `Split-<name>/`, span and version properties), so every downstream component
is untouched. What differs is the reading: pyarrow's C++ readers (data/readers.py) and a
vectorised encoder (example_encoding.py) instead of Python per value. As a Beam pipeline,
one element per block of a file (a whole small file; a large one in blocks of `block_bytes`
at safe line ends or row groups, shuffled so that workers share it), in two passes so that
a column's feature type is the same in every file of the split:

1. each block is profiled (values per column, values that are not numbers) and the profiles
   merged: a column's kind is its schema type when every value parses as it, otherwise
   what CsvExampleGen would infer (so a text value in a numeric column reaches validation,
   which names it, as before); a column without any value is written with no kind;
2. each block is read again, encoded, split, and written to equal shards of ~100,000
   consecutive records (downstream components read files in parallel), named after the
   file's index and block (a retried element rewrites its own shards).

How rows are split (`split` in the custom config, recorded in the artifact's `split`
property and in `ingest.json`):
- by time (`TimeSplit`): the eval split is the newest part of the rows by a time column, a
  fraction of them or a period, and train what came before, less an optional gap (rows in
  the gap are in neither: labels that come late). The cut is found in the profile pass, from
  an hourly histogram of the column. Rows without a time go to train (and validation, which
  knows the column is required, names them).
- by hash (TFX's own partition: the same records in the same splits as CsvExampleGen), of
  the whole record or of a partition feature (rows sharing its value stay on one side).

`ingest.json` beside the splits records files, blocks, rows per split, the split and every
column's profile.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from google.protobuf import struct_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.example_gen import utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from data import example_encoding as enc
from data import readers
from reporting.artifacts import describe_split, utc

log = logging.getLogger(__name__)

INGEST_FILE = "ingest.json"
SHARD = "data_tfrecord-{index:05d}-of-{count:05d}-block-{block:04d}-part-{part:04d}.gz"
# A gzip file is read by one worker: downstream components (StatisticsGen, Transform, the
# Evaluator) parallelise over files, so a large input file is written as several shards of
# about the same size (consecutive records; the expected split sizes come from the profile
# pass), their number a multiple of 4 so that 2 or 4 workers share
# them evenly (3 shards on 2 workers made the Evaluator 30% slower at 1M rows).
ROWS_PER_SHARD = 100_000


def shard_count(expected_rows: float) -> int:
    if expected_rows <= ROWS_PER_SHARD:
        return 1
    return -(-math.ceil(expected_rows / ROWS_PER_SHARD) // 4) * 4
_SCHEMA_KINDS = {schema_pb2.FLOAT: enc.FLOAT, schema_pb2.INT: enc.INT,
                 schema_pb2.BYTES: enc.BYTES}


def schema_types(schema_file: str) -> dict[str, str]:
    if not schema_file:
        return {}
    from google.protobuf import text_format

    with fileio.open(schema_file) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    return {f.name: _SCHEMA_KINDS[f.type] for f in schema.feature if f.type in _SCHEMA_KINDS}


# One element of the read: (file index, path, block index, block or None for the whole file).
Element = tuple[int, str, int, "readers.Block | None"]


def file_blocks(indexed: tuple[int, str], block_bytes: int) -> list[Element]:
    index, path = indexed
    return [(index, path, number, block)
            for number, block in enumerate(readers.blocks(path, block_bytes))]


def block_key(element: Element) -> str:
    return f"{element[1]}#{element[2]}"


HOUR = 3600
DAY = 86400
NO_CUT = 2**62  # no time to cut at: every row is older


@dataclass(frozen=True)
class TimeSplit:
    """The eval split is the newest `eval_fraction` of the rows by `column` (UNIX seconds,
    or ISO 8601 text with `format` iso8601), or with `eval_days` the newest that many days;
    train ends `gap_days` before it."""

    column: str
    eval_fraction: float = 0.25
    eval_days: float = 0.0
    gap_days: float = 0.0
    format: str = "unix_seconds"

    def seconds(self, batch) -> tuple[np.ndarray, np.ndarray] | None:
        """(UNIX seconds, valid) of each row of a batch; None when the batch lacks the
        column. A value that is not a time is invalid, never an error: validation names
        it, and the row goes to train."""
        if self.column not in batch.schema.names:
            return None
        text = readers.text(batch.column(self.column))
        if self.format == "iso8601":
            return readers.iso_seconds(text.to_pylist())
        whole = pc.match_substring_regex(text, r"^[+-]?\d+(\.0*)?$")
        numbers = pc.cast(pc.if_else(whole, text, "0"), pa.float64())
        valid = whole.to_numpy(zero_copy_only=False).astype(bool)
        return numbers.to_numpy(zero_copy_only=False).astype(np.int64), valid

    def cut(self, hours: dict[int, int]) -> tuple[int, int]:
        """(first second of eval, first second after train) from rows per hour, on hour
        boundaries: the rows of one hour go to one side. Without a single time (no rows, or
        the column empty: validation names it) every row goes to train."""
        if not hours:
            return NO_CUT, NO_CUT
        newest = max(hours)
        if self.eval_days > 0:
            eval_from = (newest + 1) * HOUR - round(self.eval_days * DAY / HOUR) * HOUR
        else:
            wanted, seen, eval_from = self.eval_fraction * sum(hours.values()), 0, newest * HOUR
            for hour in sorted(hours, reverse=True):
                seen += hours[hour]
                eval_from = hour * HOUR
                if seen >= wanted:
                    break
        if eval_from <= min(hours) * HOUR:
            raise readers.InputError(
                f"the eval period leaves no earlier rows to train on: every row of "
                f"'{self.column}' is from {utc(min(hours) * HOUR)} on (lower --eval-days or "
                "--eval-fraction)")
        return eval_from, eval_from - round(self.gap_days * DAY)

    def assign(self, seconds: tuple[np.ndarray, np.ndarray] | None, rows: int, eval_from: int,
               train_before: int) -> np.ndarray:
        """0 (train), 1 (eval) or -1 (the gap) per row; rows without a time are train."""
        if seconds is None:
            return np.zeros(rows, np.int64)
        values, valid = seconds
        side = np.where(values >= eval_from, 1, np.where(values < train_before, 0, -1))
        return np.where(valid, side, 0)


def time_split(custom: dict[str, Any]) -> TimeSplit | None:
    values = custom.get("time_split")
    return TimeSplit(**dict(values)) if values else None


def hours_of(batch, by_time: TimeSplit) -> dict[int, int]:
    """Rows per hour of the time column in a batch (its values that are times)."""
    seconds = by_time.seconds(batch)
    if seconds is None:
        return {}
    values, valid = seconds
    hours, counts = np.unique(values[valid] // HOUR, return_counts=True)
    return dict(zip(hours.tolist(), counts.tolist(), strict=True))


def profile_block(element: Element, delimiter: str | None,
                  by_time: TimeSplit | None = None) -> dict[str, Any]:
    columns: dict[str, dict[str, int]] = {}
    hours: dict[int, int] = {}
    rows = 0
    _, path, _, block = element
    for batch in readers.read_batches(path, delimiter, block):
        rows += batch.num_rows
        if by_time:
            for hour, count in hours_of(batch, by_time).items():
                hours[hour] = hours.get(hour, 0) + count
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            seen = readers.profile(column)
            total = columns.setdefault(name, dict.fromkeys(seen, 0))
            for key, value in seen.items():
                total[key] += value
    return {"blocks": 1, "rows": rows, "columns": columns, "order": list(columns),
            "block_rows": {block_key(element): rows}, "hours": hours}


def merge_profiles(profiles) -> dict[str, Any]:
    merged: dict[str, Any] = {"blocks": 0, "rows": 0, "columns": {}, "order": [],
                              "block_rows": {}, "hours": {}}
    for p in profiles:
        merged["blocks"] += p["blocks"]
        merged["rows"] += p["rows"]
        merged["block_rows"].update(p["block_rows"])
        for hour, count in p["hours"].items():
            merged["hours"][hour] = merged["hours"].get(hour, 0) + count
        for name in p["order"]:
            if name not in merged["columns"]:
                merged["order"].append(name)
            total = merged["columns"].setdefault(name, dict.fromkeys(p["columns"][name], 0))
            for key, value in p["columns"][name].items():
                total[key] += value
    return merged


def kinds(profile: dict[str, Any], types: dict[str, str]) -> dict[str, str]:
    return {name: readers.kind_of(types.get(name), profile["columns"][name])
            for name in profile["order"]}


GAP, NO_TIME = -1, -2  # counted beside the splits: rows in the gap, rows without a time


class EncodeAndWrite(beam.DoFn):
    """One block of a file: read, encode, split, write each split's shards; yields rows per
    split (and GAP, NO_TIME counts)."""

    def __init__(self, split_uris: list[str], buckets: list[int], partition_feature: str,
                 delimiter: str | None, count: int, by_time: TimeSplit | None = None):
        self._split_uris = split_uris
        self._buckets = buckets
        self._partition_feature = partition_feature
        self._delimiter = delimiter
        self._count = count
        self._by_time = by_time

    def process(self, element: Element, profile: dict[str, Any], types: dict[str, str]):
        index, path, number, block = element
        column_kinds = kinds(profile, types)
        cut = self._by_time.cut(profile["hours"]) if self._by_time else None
        fractions = split_shares(profile["hours"], cut) if cut else \
            np.diff([0, *self._buckets]) / self._buckets[-1]
        expected = [profile["block_rows"].get(block_key(element), 0) * f for f in fractions]
        parts = [shard_count(n) for n in expected]
        per_part = [max(1, math.ceil(n / p)) for n, p in zip(expected, parts, strict=True)]
        writers = [[self._writer(index, number, split, part) for part in range(count)]
                   for split, count in enumerate(parts)]
        rows = [0] * len(self._split_uris)
        left_out = {GAP: 0, NO_TIME: 0}
        try:
            for batch in readers.read_batches(path, self._delimiter, block):
                columns = readers.typed_columns(batch, column_kinds)
                records = enc.to_arrow(*enc.serialize(columns, batch.num_rows)).to_pylist()
                if cut:
                    seconds = self._by_time.seconds(batch)
                    splits = self._by_time.assign(seconds, len(records), *cut)
                    left_out[GAP] += int((splits == GAP).sum())
                    left_out[NO_TIME] += len(records) if seconds is None \
                        else int((~seconds[1]).sum())
                else:
                    splits = self._splits(records)
                for record, split in zip(records, splits, strict=True):
                    if split < 0:
                        continue
                    part = min(parts[split] - 1, rows[split] // per_part[split])
                    writers[split][part].write(record)
                    rows[split] += 1
        finally:
            for writer in (w for split in writers for w in split):
                writer.close()
        yield from enumerate(rows)
        yield from left_out.items()

    def _writer(self, index: int, block: int, split: int, part: int) -> tf.io.TFRecordWriter:
        """Named by file, block and part, so that a retried element rewrites its own
        shards."""
        name = SHARD.format(index=index, count=self._count, block=block, part=part)
        return tf.io.TFRecordWriter(os.path.join(self._split_uris[split], name),
                                    options="GZIP")

    def _splits(self, records: list[bytes]) -> list[int]:
        """TFX's partition (base_example_gen_executor._PartitionFn) of each record."""
        if len(self._buckets) == 1:
            return [0] * len(records)
        keys = records
        if self._partition_feature:
            keys = [_feature_key(r, self._partition_feature) for r in records]
        total = self._buckets[-1]
        return [bisect.bisect(self._buckets, int(hashlib.sha256(k).hexdigest(), 16) % total)
                for k in keys]


def split_shares(hours: dict[int, int], cut: tuple[int, int]) -> list[float]:
    """The share of rows in train and eval at this cut, to size the shards."""
    eval_from, train_before = cut
    total = sum(hours.values()) or 1
    newer = sum(n for h, n in hours.items() if h * HOUR >= eval_from)
    older = sum(n for h, n in hours.items() if h * HOUR < train_before)
    return [older / total, newer / total]


def _feature_key(record: bytes, name: str) -> bytes:
    feature = tf.train.Example.FromString(record).features.feature.get(name)
    if feature is None or not feature.HasField("kind"):
        raise readers.InputError(f"the partition feature '{name}' has no value in a row")
    return feature.SerializeToString(deterministic=True)


class Executor(BaseExampleGenExecutor):
    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("ArrowExampleGen writes its splits itself (Do)")

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                  input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        custom = settings(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY))
        types = schema_types(custom.get("schema_file", ""))
        by_time = time_split(custom)
        delimiter = custom.get("delimiter") or None
        block_bytes = int(custom.get("block_bytes", readers.BLOCK_BYTES))
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        split_names = utils.generate_output_split_names(input_config, output_config)
        examples.split_names = artifact_utils.encode_split_names(split_names)
        base = exec_properties[standard_component_specs.INPUT_BASE_KEY]

        if output_config.split_config.splits:  # one input, split by hash
            buckets = list(np.cumsum([s.hash_buckets for s in output_config.split_config.splits]))
            jobs = [(input_config.splits[0].pattern, split_names, [int(b) for b in buckets])]
        else:  # each input split is an output split
            jobs = [(s.pattern, [s.name], [1]) for s in input_config.splits]
        partition = output_config.split_config.partition_feature_name
        if by_time and (partition or jobs[0][1] != ["train", "eval"]):
            raise readers.InputError("a time split takes one input into the splits train and "
                                     "eval, without a partition feature")

        pipeline = self._make_beam_pipeline()
        plans = []
        for number, (pattern, names, job_buckets) in enumerate(jobs):
            files = sorted(fileio.glob(os.path.join(base, pattern)))
            files = [f for f in files if not fileio.isdir(f)]
            if not files:
                raise readers.InputError(f"{os.path.join(base, pattern)}: matches no file")
            file_format = readers.span_format(files)
            readers.check_against_schema(
                files, types, delimiter, by_time.column if by_time else "",
                by_time.format if by_time else "unix_seconds",
                "Write its problem: python -m tools.problem init --data DATA --label COLUMN "
                "--out DIR, then run with --problem-dir DIR")
            uris = [os.path.join(examples.uri, f"Split-{n}") for n in names]
            for uri in uris:
                fileio.makedirs(uri)
            # Blocks are planned on the workers (a CSV's are found by reading it) and
            # shuffled, so that the blocks of one large file go to different workers.
            elements = (pipeline
                        | f"Files[{number}]" >> beam.Create(list(enumerate(files)))
                        | f"Blocks[{number}]" >> beam.FlatMap(file_blocks, block_bytes)
                        | f"Spread[{number}]" >> beam.Reshuffle())
            profile = (elements
                       | f"Profile[{number}]" >> beam.Map(
                           profile_block, delimiter, by_time)
                       | f"Merge[{number}]" >> beam.CombineGlobally(merge_profiles))
            rows = (elements
                    | f"Write[{number}]" >> beam.ParDo(
                        EncodeAndWrite(uris, job_buckets, partition, delimiter, len(files),
                                       by_time),
                        beam.pvalue.AsSingleton(profile), types)
                    | f"Count[{number}]" >> beam.CombinePerKey(sum))
            report_uri = os.path.join(examples.uri, f".ingest-{number}.json")
            _ = (profile
                 | f"Report[{number}]" >> beam.Map(
                     _write_report, report_uri, names, files, file_format, types,
                     beam.pvalue.AsList(rows), split_method(by_time, partition, job_buckets)))
            plans.append(report_uri)
        pipeline.run().wait_until_finish()

        reports = []
        for uri in plans:
            with fileio.open(uri) as f:
                reports.append(json.load(f))
            fileio.remove(uri)
        with fileio.open(os.path.join(examples.uri, INGEST_FILE), "w") as f:
            json.dump(reports, f, indent=2)
        rows = {name: n for r in reports for name, n in r["rows_per_split"].items()}
        examples.set_string_custom_property("rows_per_split", json.dumps(rows))
        examples.set_string_custom_property("split", json.dumps(reports[0]["split"]))
        from tfx.components.util import examples_utils

        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        for report in reports:
            log.info("ArrowExampleGen: %s rows from %d %s file(s) in %d block(s) -> %s",
                 report["rows"], len(report["files"]), report["format"], report["blocks"],
                 report["rows_per_split"])
            log.info("ArrowExampleGen: split %s", describe_split(report["split"]))
            for line in report["not_parsed"]:
                log.warning("ArrowExampleGen: %s", line)


def split_method(by_time: TimeSplit | None, partition: str, buckets: list[int]
                 ) -> dict[str, Any]:
    """How the rows were split, for the artifact and the people who read the run."""
    if by_time:
        return {"by": "time", **dataclasses.asdict(by_time)}
    if partition:
        return {"by": "group", "feature": partition, "buckets": buckets}
    return {"by": "hash", "buckets": buckets}


def _write_report(profile: dict, uri: str, names: list[str], files: list[str],
                  file_format: str, types: dict[str, str], rows: list,
                  split: dict[str, Any]) -> None:
    per_split = dict.fromkeys(names, 0)
    left_out = {GAP: 0, NO_TIME: 0}
    for index, count in rows:
        if index < 0:
            left_out[index] += count
        else:
            per_split[names[index]] += count
    if split["by"] == "time":
        by_time = TimeSplit(**{k: v for k, v in split.items() if k != "by"})
        eval_from, train_before = by_time.cut(profile["hours"])
        split = {**split, "eval_from": eval_from if eval_from != NO_CUT else None,
                 "train_before": train_before if train_before != NO_CUT else None,
                 "gap_rows": left_out[GAP], "no_time_rows": left_out[NO_TIME]}
    column_kinds = kinds(profile, types)
    not_parsed = []
    for name, stats in profile["columns"].items():
        wanted = types.get(name)
        bad = stats["not_float"] if wanted == enc.FLOAT else \
            stats["not_int"] if wanted == enc.INT else 0
        if bad and column_kinds[name] != wanted:
            not_parsed.append(f"column '{name}': {bad} of {stats['values']} value(s) are not "
                              f"{wanted} as the schema says: written as {column_kinds[name]}, "
                              "so validation stops the run and names it")
    report = {"files": files, "blocks": profile["blocks"], "format": file_format,
              "rows": profile["rows"],
              "rows_per_split": per_split, "split": split, "kinds": column_kinds,
              "columns": profile["columns"], "not_parsed": not_parsed}
    with fileio.open(uri, "w") as f:
        json.dump(report, f, indent=2)


def settings(custom_config_json: str | None) -> dict[str, Any]:
    """The executor's settings, packed as a Struct in ExampleGen's CustomConfig."""
    if not custom_config_json:
        return {}
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(custom_config_json, config)
    values = struct_pb2.Struct()
    if config.custom_config.Is(values.DESCRIPTOR):
        config.custom_config.Unpack(values)
    return dict(values)


class ArrowExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen reading CSV (as users' tools write it) and Parquet with Arrow.

    `schema_file`: the schema whose feature types the columns are written as;
    `delimiter`: the CSV delimiter, "" to detect it from each file's header line;
    `block_bytes`: a file larger than this is read as blocks of about this size, which Beam
    spreads over workers (0: every file whole); `by_time`: split by time instead of by
    hash (the output config's two splits are train and eval)."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: str, schema_file: str = "", delimiter: str = "",
                 block_bytes: int = readers.BLOCK_BYTES, by_time: TimeSplit | None = None,
                 **kwargs: Any):
        values = struct_pb2.Struct()
        values.update({"schema_file": schema_file, "delimiter": delimiter,
                       "block_bytes": block_bytes})
        if by_time:
            values.update({"time_split": dataclasses.asdict(by_time)})
        config = example_gen_pb2.CustomConfig()
        config.custom_config.Pack(values)
        super().__init__(input_base=input_base, custom_config=config, **kwargs)
