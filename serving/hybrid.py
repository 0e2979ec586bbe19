"""Hybrid static/dynamic serving: the peaked head of a key space answered from a table of
precomputed predictions, the tail by the model.

When a few keys (a trip, a customer, a route) make most of the requests, computing their
predictions on every request repeats work. `serving.batch_predict --key K` scores their rows
once (key -> probability) and records in OUTPUT.meta.json which model version made them;
the local server started with `--prediction-table OUTPUT` answers a row whose key field `K`
is in the table from the table, and every other row from the model. The key travels in the
row (`{"trip_id": "t-17", "fare": ...}`); the server takes it out before the raw-row contract
sees the row, so rows are still validated whole. `--lookup-key K` alone (no table yet) takes
and logs keys, so the request log can be analysed before any table exists. The table
answers only while the version that made it is the version chosen for the request: after a
push, for a canary or a bandit arm, the model answers, so a stale table never gives an old
model's prediction. The `X-Prediction-Source` response header says `table`, `model`, or
`table=N,model=M`.

`python -m serving.hybrid analyze --request-log FILE` says whether a table pays: how many
keys, how peaked (entropy, the share of traffic of the top K keys), the hit rate that a table
of the top K keys of the log's first half gets on its second half (time order: a table built
from history, met by later traffic), and so static, dynamic or hybrid, with the table's
memory.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from serving import request_log

log = logging.getLogger(__name__)

META_SUFFIX = ".meta.json"
PROBABILITY_COLUMN = "probability"


class HybridError(ValueError):
    """A table or log that cannot be used, with the reason."""


@dataclasses.dataclass(frozen=True)
class TableMeta:
    key: str  # the column (and request field) that holds the key
    version: int | None  # the model version that made the predictions (None: unknown)
    model: str = ""
    rows: int = 0
    written: float = dataclasses.field(default_factory=time.time)


def meta_path(table_path: str | Path) -> Path:
    table_path = Path(table_path)
    return table_path.with_name(table_path.name + META_SUFFIX)


def write_meta(table_path: str | Path, meta: TableMeta) -> None:
    path = meta_path(table_path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(dataclasses.asdict(meta), f, indent=2)
    os.replace(f.name, path)


def read_meta(table_path: str | Path) -> TableMeta:
    path = meta_path(table_path)
    try:
        data = json.loads(path.read_text())
        return TableMeta(key=str(data["key"]), version=data.get("version"),
                         model=data.get("model", ""), rows=int(data.get("rows", 0)),
                         written=float(data.get("written", 0)))
    except FileNotFoundError:
        raise HybridError(f"{path} is missing: a table needs the meta file serving.batch_predict "
                          "writes beside it (which model version made it, which key)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise HybridError(f"{path} is not a table's meta file: {e}") from None


def normalize_key(value: Any) -> str | None:
    """One spelling per key, whatever the client's JSON (17, 17.0 and "17" are one key);
    None when the value cannot be a key (the model answers that row)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return None


def _fingerprint(path: Path) -> tuple:
    files = [path, meta_path(path)]
    return tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in files)


@dataclasses.dataclass(frozen=True)
class PredictionTable:
    path: Path
    meta: TableMeta
    values: dict[str, float]
    fingerprint: tuple

    @classmethod
    def load(cls, path: str | Path) -> PredictionTable:
        """A table written by serving.batch_predict (.parquet or .csv, and its meta file)."""
        path = Path(path)
        if not path.is_file():
            raise HybridError(f"no prediction table at {path}")
        fingerprint = _fingerprint(path)
        meta = read_meta(path)
        keys, probabilities = _read_columns(path, meta.key)
        values: dict[str, float] = {}
        for i, (key, p) in enumerate(zip(keys, probabilities, strict=True)):
            name = normalize_key(key)
            if name is None:
                raise HybridError(f"{path} row {i + 1}: key {key!r} is not a usable key")
            if not (isinstance(p, float) and 0.0 <= p <= 1.0):
                raise HybridError(f"{path} row {i + 1} (key {name!r}): probability {p!r} is "
                                  "not a number in [0, 1]")
            if values.setdefault(name, p) != p:
                raise HybridError(f"{path}: key {name!r} has two different probabilities "
                                  f"({values[name]} and {p}); a key must name one row")
        return cls(path, meta, values, fingerprint)

    def serves(self, version: int) -> bool:
        return self.meta.version is not None and self.meta.version == version

    def lookup(self, keys: Sequence[str | None]) -> list[float | None]:
        return [self.values.get(k) if k is not None else None for k in keys]

    def describe(self) -> str:
        return (f"{len(self.values):,} keys ({self.meta.key!r}) from model version "
                f"{self.meta.version if self.meta.version is not None else 'unknown'}")


def _read_columns(path: Path, key: str) -> tuple[list, list[float]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - any reader error: not a table
            raise HybridError(f"{path} is not a readable Parquet file: {e}") from None
        missing = [c for c in (key, PROBABILITY_COLUMN) if c not in table.column_names]
        if missing:
            raise HybridError(f"{path} has no column(s) {missing}; columns: {table.column_names}")
        return (table.column(key).to_pylist(),
                [float(p) if p is not None else None for p in
                 table.column(PROBABILITY_COLUMN).to_pylist()])
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in (key, PROBABILITY_COLUMN) if c not in (reader.fieldnames or [])]
            if missing:
                raise HybridError(f"{path} has no column(s) {missing}; columns: "
                                  f"{reader.fieldnames}")
            keys, probabilities = [], []
            for row in reader:
                keys.append(row[key])
                try:
                    probabilities.append(float(row[PROBABILITY_COLUMN]))
                except ValueError:
                    probabilities.append(row[PROBABILITY_COLUMN])
            return keys, probabilities
    raise HybridError(f"{path}: a prediction table is .parquet or .csv")


def take_keys(body: Any, field: str) -> tuple[Any, list[str | None] | None]:
    """(the request without its key field, each row's key) for a :predict body; keys is None
    when no row carries the field. A key that is also a model feature stays in the row.
    Rows are copied, never changed in place."""
    from models import features as F

    strip = field not in F.BY_NAME
    if not isinstance(body, dict):
        return body, None
    if isinstance(body.get("instances"), list):
        rows = body["instances"]
        if not any(isinstance(r, dict) and field in r for r in rows):
            return body, None
        keys = [normalize_key(r.get(field)) if isinstance(r, dict) else None for r in rows]
        if strip:
            rows = [{k: v for k, v in r.items() if k != field} if isinstance(r, dict) else r
                    for r in rows]
        return {**body, "instances": rows}, keys
    inputs = body.get("inputs")
    if isinstance(inputs, dict) and field in inputs:
        column = inputs[field]
        if not isinstance(column, list):
            raise HybridError(f"input {field!r} (the prediction table's key) must be a list, "
                              "one key per example")
        if strip:
            inputs = {k: v for k, v in inputs.items() if k != field}
        return {**body, "inputs": inputs}, [normalize_key(v) for v in column]
    return body, None


def source_header(hits: Sequence[bool]) -> str:
    table = sum(hits)
    if table == len(hits):
        return "table"
    if table == 0:
        return "model"
    return f"table={table},model={len(hits) - table}"


# ---------------------------------------------------------------- should a table be used?


@dataclasses.dataclass
class KeyProfile:
    requests: int
    without_key: int
    distinct: int
    singletons: int
    entropy_bits: float
    top_share: dict[int, float]  # share of requests of the K most requested keys
    holdout_hit_rate: dict[int, float]  # top K of the first half, met by the second half
    unseen_next: float  # Good-Turing: chance that the next request's key was never seen
    bytes_per_key: float
    budget_bytes: int
    recommendation: str
    table_keys: int
    predicted_hit_rate: float
    reason: str

    @property
    def table_bytes(self) -> int:
        return int(self.table_keys * self.bytes_per_key)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "table_bytes": self.table_bytes}


def read_request_keys(path: str | Path, key_field: str | None = None) -> tuple[list[str], int]:
    """(keys in time order, requests without a key) from the server's request log (JSONL,
    `lookup_key`) or from a CSV column `key_field`."""
    path = Path(path)
    if not path.is_file():
        raise HybridError(f"no such request log: {path}")
    keys, without = [], 0
    if path.suffix == ".csv":
        if not key_field:
            raise HybridError(f"{path} is a CSV: name its key column with --key")
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if key_field not in (reader.fieldnames or []):
                raise HybridError(f"{path} has no column {key_field!r}; columns: "
                                  f"{reader.fieldnames}")
            for row in reader:
                key = normalize_key(row[key_field] or None)
                if key is None:
                    without += 1
                else:
                    keys.append(key)
        return keys, without
    records = []
    for line in request_log.read(path):
        if line.record is None:
            raise HybridError(f"{path} line {line.number} is {line.problem}; a request log "
                              "has one JSON object per line")
        value = line.record.get("lookup_key")
        if key_field and value is None:
            value = (request_log.features(line.record) or {}).get(key_field)
        key = normalize_key(value)
        if key is None:
            without += 1
        else:
            records.append((line.record.get("time", 0.0), line.number, key))
    records.sort()  # the server's clock, then file order
    return [key for _, _, key in records], without


def measured_bytes_per_key(keys: Iterable[str], sample: int = 100_000) -> float:
    """Memory of a table entry as the server holds it (a dict of str -> float), measured."""
    chosen = list(dict.fromkeys(keys))[:sample] or ["k"]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = {k.encode().decode(): 0.5 + i * 1e-9 for i, k in enumerate(chosen)}  # own copies
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del table
    return used / len(chosen)


def _grid(distinct: int) -> list[int]:
    sizes = [10 ** i for i in range(1, 10) if 10 ** i < distinct]
    for k in list(sizes):
        sizes += [m * k for m in (2, 5) if m * k < distinct]
    return sorted(set(sizes) | {distinct}) if distinct else []


def profile(keys: Sequence[str], without_key: int = 0, budget_bytes: int = 256 << 20,
            min_hit_rate: float = 0.3, static_hit_rate: float = 0.99) -> KeyProfile:
    """How peaked the keys are, and what a table of their head would answer."""
    if len(keys) < 20:
        raise HybridError(f"{len(keys)} keyed requests are too few to judge; a request log of "
                          "at least a few hundred keyed requests is needed")
    counts = collections.Counter(keys)
    n, ranked = len(keys), [k for k, _ in counts.most_common()]
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    singletons = sum(1 for c in counts.values() if c == 1)
    grid = _grid(len(counts))
    top_share, total = {}, 0
    for i, key in enumerate(ranked, 1):
        total += counts[key]
        if i in grid:
            top_share[i] = total / n
    half = n // 2
    history = collections.Counter(keys[:half])
    history_ranked = [k for k, _ in history.most_common()]
    later = collections.Counter(keys[half:])
    holdout, covered = {}, 0
    for i, key in enumerate(history_ranked, 1):
        covered += later.get(key, 0)
        if i in grid or i == len(history_ranked):
            holdout[i] = covered / (n - half)
    bytes_per_key = measured_bytes_per_key(ranked)
    budget_keys = int(budget_bytes // bytes_per_key)
    fitting = {k: h for k, h in holdout.items() if k <= budget_keys}
    best = max(fitting.values(), default=0.0)
    all_keys_rate = max(holdout.values(), default=0.0)
    if len(counts) <= budget_keys and all_keys_rate >= static_hit_rate:
        recommendation, size, rate = "static", len(counts), all_keys_rate
        reason = (f"a table of every key ({len(counts):,}) answers {all_keys_rate:.1%} of later "
                  "requests: precompute them all; the model is only for the rare new key")
    else:
        size = min((k for k, h in fitting.items() if h >= 0.9 * best), default=0)
        rate = fitting.get(size, 0.0)
        if rate < min_hit_rate:
            recommendation = "dynamic"
            reason = (f"the best table within {budget_bytes / 2**20:,.0f} MiB answers only "
                      f"{rate:.1%} of later requests (below {min_hit_rate:.0%}): the keys are "
                      "too spread for a table to pay for its refreshes")
            size = 0
        else:
            recommendation = "hybrid"
            reason = (f"a table of the top {size:,} keys answers {rate:.1%} of later requests "
                      f"(90% of the best any table within budget does); the model answers the "
                      "rest")
    return KeyProfile(
        requests=n, without_key=without_key, distinct=len(counts), singletons=singletons,
        entropy_bits=entropy, top_share=top_share, holdout_hit_rate=holdout,
        unseen_next=singletons / n, bytes_per_key=bytes_per_key, budget_bytes=budget_bytes,
        recommendation=recommendation, table_keys=size, predicted_hit_rate=rate,
        reason=reason)


def top_keys(keys: Sequence[str], count: int) -> list[str]:
    return [k for k, _ in collections.Counter(keys).most_common(count)]


def describe(p: KeyProfile) -> str:
    uniform = math.log2(p.distinct) if p.distinct > 1 else 0.0
    shown = [k for k in sorted(p.top_share) if k < p.distinct][:6]
    lines = [
        f"{p.requests:,} keyed requests ({p.without_key:,} without a key), "
        f"{p.distinct:,} distinct keys, {p.singletons:,} seen once",
        f"entropy {p.entropy_bits:.2f} bits ({p.entropy_bits / uniform if uniform else 0:.0%} of "
        f"the {uniform:.2f} bits of an even spread over these keys)",
        "share of requests of the top " + ", ".join(
            f"{k:,}: {p.top_share[k]:.1%}" for k in shown),
        "a table of the first half's top keys answers on the second half: " + ", ".join(
            f"{k:,}: {p.holdout_hit_rate[k]:.1%}" for k in sorted(p.holdout_hit_rate)[:6]),
        f"the next request's key is new with probability {p.unseen_next:.1%} (Good-Turing)",
        f"memory: {p.bytes_per_key:.0f} bytes per key (measured), budget "
        f"{p.budget_bytes / 2**20:,.0f} MiB",
        f"recommendation: {p.recommendation.upper()}"
        + (f", a table of {p.table_keys:,} keys (~{p.table_bytes / 2**20:.1f} MiB) answering "
           f"~{p.predicted_hit_rate:.1%} of requests" if p.table_keys else "")
        + f": {p.reason}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.hybrid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser(
        "analyze", help="peakedness and cardinality of a request log: static, dynamic or "
                        "hybrid serving, and the table's size")
    analyze.add_argument("--request-log", type=Path, required=True,
                         help="the server's request log (JSONL; rows carry `lookup_key` when "
                              "they came with the table's key field), or a CSV with --key")
    analyze.add_argument("--key", help="the key column of a CSV log, or a feature of the "
                                       "request log to use as the key")
    analyze.add_argument("--budget-mb", type=float, default=256.0,
                         help="memory the server may give the table (default 256)")
    analyze.add_argument("--min-hit-rate", type=float, default=0.3,
                         help="a table answering less than this is not worth it (default 0.3)")
    analyze.add_argument("--write-keys", type=Path,
                         help="write the recommended table's keys here (CSV, column `key` or "
                              "--key): join them to their rows and run serving.batch_predict")
    analyze.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        keys, without = read_request_keys(args.request_log, args.key)
        result = profile(keys, without, budget_bytes=int(args.budget_mb * 2**20),
                         min_hit_rate=args.min_hit_rate)
    except HybridError as e:
        print(f"serving.hybrid: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), indent=2) if args.json else describe(result))
    if args.write_keys:
        column = args.key or "key"
        with args.write_keys.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([column])
            writer.writerows([k] for k in top_keys(keys, result.table_keys))
        print(f"{result.table_keys:,} keys written to {args.write_keys}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
