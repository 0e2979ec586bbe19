"""New data spans drawn from the bundled sample, with controlled, documented changes.

Rows are drawn with replacement from the bundled 15,002 trips (so every column keeps its
joint distribution with the others, label included), then the requested changes are applied
to a reproducible subset. Each change is what happens to real taxi data:

  fare_inflation=F         fares and tips multiplied by F (prices rise; the tip *share*,
                           hence the label, stays the same)
  new_company=NAME:P       a fraction P of trips is driven by a company never seen before
  payment_shift=TYPE:P     a fraction P of trips switches to payment TYPE; switching to Cash
                           zeroes the tip, as the source data records no cash tips
  missing=FEATURE:P        FEATURE is blank in a fraction P of trips (a broken upstream field)
  leak=FEATURE:P           FEATURE carries the outcome in a fraction P of trips (`outcome-1`
                           for a big tipper, `outcome-0` otherwise; 1 or 0 in a number
                           column): a field filled in after the trip, which no split can
                           make honest
  group_effect=N:P         a fraction P of trips is driven by one of N new companies
                           (`Group-007`), each with its own chance of a big tip (drawn once,
                           uniform in [0, 1]) that decides the tip: a group a random split
                           lets the model memorise, and a split by company does not

    python -m data.simulator --out data/spans --span 5 --rows 20000 \\
        --change fare_inflation=1.5 --change payment_shift=Cash:0.3

writes data/spans/span-5/data.csv (ExampleGen's `span-{SPAN}/*` layout) and records the
span, its row count, seed and changes in data/spans/spans.json. Span N's trips are moved N x
208 weeks later (weekday and hour kept), so each span comes after the one before, as real
spans do: the out-of-time split and its leakage check see time run forward.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data import bundled
from models.features import BY_NAME, LABEL_SOURCE, TIME_COLUMN, raw_label

log = logging.getLogger(__name__)

Row = dict[str, str]
TRIP_ID = "trip_id"  # key column of unlabelled spans
SPAN_SECONDS = 208 * 7 * 86400  # how much later each span's trips are than the one before


@dataclass(frozen=True)
class Change:
    """One documented change: `kind` is a key of CHANGES, `args` its parsed arguments."""

    kind: str
    args: tuple

    def __str__(self) -> str:
        return f"{self.kind}={':'.join(str(a) for a in self.args)}"


def _scale(value: str, factor: float) -> str:
    return "" if value == "" else f"{float(value) * factor:.2f}"


def _fare_inflation(row: Row, factor: float) -> None:
    row["fare"] = _scale(row["fare"], factor)
    row["tips"] = _scale(row["tips"], factor)


def _new_company(row: Row, name: str) -> None:
    row["company"] = name


def _payment_shift(row: Row, payment_type: str) -> None:
    row["payment_type"] = payment_type
    if payment_type == "Cash":
        row["tips"] = "0.00"


def _missing(row: Row, feature: str) -> None:
    row[feature] = ""


def _leak(row: Row, feature: str) -> None:
    outcome = raw_label(row)
    row[feature] = str(outcome) if BY_NAME.get(feature) and BY_NAME[feature].dtype != "string" \
        else f"outcome-{outcome}"


def _group_effect(row: Row, groups: int, rng: random.Random) -> None:
    group = rng.randrange(groups)
    row["company"] = f"Group-{group:03d}"
    chance = random.Random(f"group-{group}").random()  # the same for a group in every span
    fare = float(row["fare"] or 0) or 10.0
    row["fare"] = f"{fare:.2f}"
    row["tips"] = f"{0.3 * fare:.2f}" if rng.random() < chance else "0.00"


# kind -> (applies to every row?, argument parsers, function)
CHANGES: dict[str, tuple[bool, tuple[Callable[[str], object], ...], Callable]] = {
    "fare_inflation": (True, (float,), _fare_inflation),
    "new_company": (False, (str, float), _new_company),
    "payment_shift": (False, (str, float), _payment_shift),
    "missing": (False, (str, float), _missing),
    "leak": (False, (str, float), _leak),
    "group_effect": (False, (int, float), _group_effect),
}
NEEDS_RANDOM = {"group_effect"}  # changes that draw from the change stream themselves


def parse_change(text: str) -> Change:
    """'payment_shift=Cash:0.3' -> Change('payment_shift', ('Cash', 0.3)); clear errors."""
    kind, _, raw = text.partition("=")
    if kind not in CHANGES:
        raise ValueError(f"unknown change {kind!r}; known: {', '.join(CHANGES)}")
    _, parsers, _ = CHANGES[kind]
    parts = raw.split(":") if raw else []
    if len(parts) != len(parsers):
        shape = ":".join(p.__name__.upper() for p in parsers)
        raise ValueError(f"{kind} takes {shape}, got {raw!r}")
    try:
        args = tuple(parse(part) for parse, part in zip(parsers, parts, strict=True))
    except ValueError:
        raise ValueError(f"{kind}: cannot read {raw!r}") from None
    if len(args) == 2 and not 0.0 <= args[1] <= 1.0:
        raise ValueError(f"{kind}: fraction {args[1]} is not in [0, 1]")
    if kind == "fare_inflation" and args[0] <= 0:
        raise ValueError("fare_inflation: factor must be > 0")
    if kind == "group_effect" and not 2 <= args[0] <= 1000:
        raise ValueError("group_effect: the number of groups must be in 2..1000")
    return Change(kind, args)


def draw(source_rows: list[Row], rows: int, seed: int,
         changes: list[Change] = (), shift_seconds: int = 0) -> Iterator[Row]:
    """`rows` rows drawn with replacement, each change applied with its own probability,
    their trip times moved `shift_seconds` later."""
    # Separate streams: the same seed draws the same trips whatever the changes.
    rng, change_rng = random.Random(seed), random.Random(f"{seed}-changes")
    header = set(source_rows[0]) if source_rows else set()
    for change in changes:
        if change.kind in ("missing", "leak") and change.args[0] not in header:
            raise ValueError(f"{change.kind}: no column {change.args[0]!r}; columns: "
                             f"{sorted(header)}")
    for _ in range(rows):
        row = dict(rng.choice(source_rows))
        if shift_seconds and row.get(TIME_COLUMN):
            row[TIME_COLUMN] = str(int(float(row[TIME_COLUMN])) + shift_seconds)
        for change in changes:
            every_row, _, apply = CHANGES[change.kind]
            if every_row:
                apply(row, *change.args)
            elif change_rng.random() < change.args[-1]:
                extra = (change_rng,) if change.kind in NEEDS_RANDOM else ()
                apply(row, *change.args[:-1], *extra)
        yield row


def write_span(out_dir: Path, span: int, rows: int, seed: int = 0,
               changes: list[Change] = (), source: Path | None = None,
               progress_every: int = 200_000, unlabelled: bool = False) -> Path:
    """Writes out_dir/span-{span}/data.csv and records it in out_dir/spans.json.

    `unlabelled`: rows as batch inference receives them, without the label's source column
    (tips) and with a TRIP_ID key column ("SPAN-ROW") that predictions join back on."""
    if span < 0 or rows < 1:
        raise ValueError("span must be >= 0 and rows >= 1")
    header, source_rows = bundled.read_rows(source or bundled.materialize())
    if unlabelled:
        header = [TRIP_ID] + [c for c in header if c != LABEL_SOURCE]
    dest = out_dir / f"span-{span}" / bundled.CSV_NAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    started = time.monotonic()
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for i, row in enumerate(draw(source_rows, rows, seed, changes, span * SPAN_SECONDS),
                                start=1):
            if unlabelled:
                row = {TRIP_ID: f"{span}-{i}", **row}
                del row[LABEL_SOURCE]
            writer.writerow(row)
            if i % progress_every == 0:
                log.info("span %d: %d/%d rows (%.0f rows/s)", span, i, rows,
                         i / (time.monotonic() - started))
    tmp.replace(dest)  # a half-written span never looks like a complete one
    _record(out_dir, span, {"rows": rows, "seed": seed, "changes": [str(c) for c in changes],
                            "simulated": True, "unlabelled": unlabelled})
    return dest


def _record(out_dir: Path, span: int, info: dict) -> None:
    manifest_path = out_dir / "spans.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("spans", {})[str(span)] = info
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.simulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=bundled.SPANS_DIR,
                        help=f"spans directory (default {bundled.SPANS_DIR})")
    parser.add_argument("--span", type=int, required=True, help="span number to write")
    parser.add_argument("--rows", type=int, default=5000, help="rows to draw (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--unlabelled", action="store_true",
                        help=f"drop {LABEL_SOURCE} and add a {TRIP_ID} key column (rows to "
                             f"score in batch)")
    parser.add_argument("--change", action="append", default=[], metavar="KIND=ARGS",
                        help="a change to apply (repeatable); kinds: " + ", ".join(CHANGES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[simulator] %(message)s")
    try:
        changes = [parse_change(c) for c in args.change]
        path = write_span(args.out, args.span, args.rows, args.seed, changes,
                          unlabelled=args.unlabelled)
    except (ValueError, bundled.DataError) as e:
        print(f"[simulator] ERROR: {e}", file=sys.stderr)
        return 2
    described = ", ".join(str(c) for c in changes) or "no changes"
    print(f"[simulator] span {args.span}: {args.rows} rows ({described}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
