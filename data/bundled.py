"""The bundled Chicago Taxi sample: materialize it from the installed tfx wheel, verify it, cut it.

The CSV ships inside `tfx` itself, so nothing is downloaded and nothing from elsewhere is
committed; the copy under data/raw/ is git-ignored and checked against a pinned digest.

    python -m data.bundled materialize [--force]
    python -m data.bundled spans --by year|quarter [--out DIR]
    python -m data.bundled sample --rows 3000 --out DIR
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import random
import shutil
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from settings.layout import BUNDLED_DATA_DIR

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent
RAW_DIR = BUNDLED_DATA_DIR
SPANS_DIR = DATA_DIR / "spans"
CSV_NAME = "data.csv"
PACKAGE_PATH = ("examples", "chicago_taxi_pipeline", "data", "simple", "data.csv")
EXPECTED_ROWS = 15_002
EXPECTED_SHA256 = "cdaf0b5931442ef47693f408f25a37af710aca23fccb90a78f00930e89548805"
TIMESTAMP_COLUMN = "trip_start_timestamp"


class DataError(RuntimeError):
    """Bad or missing data; the message says which file and what to do."""


def source_csv() -> Path:
    spec = importlib.util.find_spec("tfx")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("tfx is not installed in this environment; run `make env` first.")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*PACKAGE_PATH)
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed tfx package; "
                        "reinstall with `make env`.")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_rows(path: Path) -> int:
    with path.open(newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def verify(path: Path) -> None:
    """Raises DataError unless `path` is byte-identical to the bundled sample."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; run `python -m data.bundled materialize`.")
    digest = sha256(path)
    if digest != EXPECTED_SHA256:
        rows = count_rows(path)
        raise DataError(
            f"checksum mismatch for {path}: sha256 {digest[:12]}…, {rows} rows; expected "
            f"{EXPECTED_SHA256[:12]}…, {EXPECTED_ROWS} rows. The copy is corrupted or was edited. "
            "Re-materialize it with `python -m data.bundled materialize --force` "
            "(that overwrites the file; keep your edits elsewhere first)."
        )
    rows = count_rows(path)
    if rows != EXPECTED_ROWS:  # Same digest, other row count: only if EXPECTED_* drift apart.
        raise DataError(f"{path} has {rows} rows, expected {EXPECTED_ROWS}.")


def materialize(dest_dir: Path = RAW_DIR, force: bool = False) -> Path:
    """Copies the sample out of the tfx wheel into `dest_dir` (an ExampleGen input_base)."""
    dest = dest_dir / CSV_NAME
    if dest.exists() and not force:
        verify(dest)
        log.info("bundled data already in place and verified: %s", dest)
        return dest
    src = source_csv()
    verify(src)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.tmp")  # test workers may copy it at once
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    verify(dest)
    log.info("materialized %d rows (sha256 %s…) from %s to %s", EXPECTED_ROWS,
             EXPECTED_SHA256[:12], src, dest)
    return dest


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def first_rows(count: int) -> list[dict[str, str]]:
    """The first `count` rows of the bundled CSV (materialized if needed), as csv.DictReader
    reads them."""
    with materialize().open(newline="") as f:
        return list(itertools.islice(csv.DictReader(f), count))


def write_rows(path: Path, header: list[str], rows: Iterable[dict[str, str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def period_of(timestamp: str, by: str) -> str:
    when = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
    if by == "year":
        return f"{when.year}"
    if by == "quarter":
        return f"{when.year}-Q{(when.month - 1) // 3 + 1}"
    raise ValueError(f"unknown span granularity {by!r}; use 'year' or 'quarter'")


def write_spans(source: Path, out_dir: Path = SPANS_DIR, by: str = "year") -> dict[int, dict]:
    """Lays the rows out as `out_dir/span-{N}/data.csv`, N = 1, 2, … in time order.

    That is the layout ExampleGen's `{SPAN}` input pattern reads; `spans.json` records
    which period each span holds so reports can name it.
    """
    header, rows = read_rows(source)
    by_period: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_period.setdefault(period_of(row[TIMESTAMP_COLUMN], by), []).append(row)
    manifest: dict[int, dict] = {}
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for span, period in enumerate(sorted(by_period), start=1):
        n = write_rows(out_dir / f"span-{span}" / CSV_NAME, header, by_period[period])
        manifest[span] = {"period": period, "rows": n}
    (out_dir / "spans.json").write_text(json.dumps({"by": by, "spans": manifest}, indent=2))
    return manifest


def write_sample(source: Path, out_dir: Path, rows: int, seed: int = 0) -> Path:
    """A reproducible random subset, for tests and quick runs."""
    header, all_rows = read_rows(source)
    if rows > len(all_rows):
        raise DataError(f"asked for {rows} rows but {source} has only {len(all_rows)}.")
    picked = random.Random(seed).sample(all_rows, rows)
    dest = out_dir / CSV_NAME
    write_rows(dest, header, picked)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.bundled", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("materialize", help="copy the sample out of the tfx wheel and verify it")
    m.add_argument("--force", action="store_true", help="overwrite an existing (edited) copy")
    m.add_argument("--out", type=Path, default=RAW_DIR)
    s = sub.add_parser("spans", help="lay the sample out as one span per year or quarter")
    s.add_argument("--by", choices=["year", "quarter"], default="year")
    s.add_argument("--out", type=Path, default=SPANS_DIR)
    p = sub.add_parser("sample", help="write a reproducible random subset")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[data] %(message)s")
    try:
        if args.command == "materialize":
            path = materialize(args.out, force=args.force)
            print(f"[data] {EXPECTED_ROWS} rows ready at {path}")
        elif args.command == "spans":
            manifest = write_spans(materialize(), args.out, by=args.by)
            for span, info in manifest.items():
                print(f"[data] span {span}: {info['period']} ({info['rows']} rows)")
            print(f"[data] spans written under {args.out}")
        else:
            path = write_sample(materialize(), args.out, args.rows, args.seed)
            print(f"[data] {args.rows} rows written to {path}")
    except DataError as e:
        print(f"[data] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
