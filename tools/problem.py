"""Write the problem definition and curated schema for your own table, from its data.

    python -m tools.problem init --data FILE_OR_DIR --label COLUMN --out DIR
        [--task binary|multiclass|regression] [--positive VALUE] [--time-column COLUMN]
        [--group-column COLUMN] [--key-column COLUMN] [--name NAME]

Reads every row once, a block at a time (the project's CSV and Parquet reader), and keeps a
sample for TFDV's statistics and schema inference. Writes DIR/problem.yaml (the label, the
task, each feature's kind and transform with the reason beside it, the time column, the
blessing) and DIR/schema.pbtxt (types, presence from missing rates, domains, the label
kept out of serving), prints what a person should review and the command that runs the
pipeline on them. Refuses, in one line: a label that is absent, constant or nearly unique;
too few rows for the task (per class, for classification); a time column it cannot parse.
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: TensorFlow's import-time C++ lines go to its log
    from settings import quiet as _quiet

    _quiet.hold_native_stderr()

import argparse
import contextlib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIN_ROWS = {"binary": 20, "multiclass": 10, "regression": 50}  # per class for classification
MAX_CLASSES = 50
SAMPLE_ROWS = 100_000
VOCAB_MAX = 1000  # more distinct strings: hashed
LEAK_SIGNAL = 0.99  # a column alone predicts the label this well: left out
COORDINATE = re.compile(r"(^|_)(lat|latitude|lon|lng|long|longitude)($|_)", re.I)


class ProblemInitError(ValueError):
    """One line: what is wrong with the data or the options, and what to do."""


@dataclass
class Column:
    """One column's profile over every row, a block at a time."""

    name: str
    rows: int = 0
    missing: int = 0
    numbers: int = 0  # values that parse as numbers
    integers: int = 0  # of those, whole numbers
    minimum: float = math.inf
    maximum: float = -math.inf
    total: float = 0.0
    squares: float = 0.0
    cubes: float = 0.0
    distinct: set = field(default_factory=set)
    capped: bool = False  # more distinct values than kept

    def add(self, values: list) -> None:
        self.rows += len(values)
        text = [None if v is None else str(v).strip() for v in values]
        present = [t for t in text if t not in (None, "", "nan", "NaN", "None")]
        self.missing += len(values) - len(present)
        numbers = []
        for t in present:
            with contextlib.suppress(ValueError):
                numbers.append(float(t))
        self.numbers += len(numbers)
        if numbers:
            array = np.array(numbers)
            finite = array[np.isfinite(array)]
            self.integers += int(np.sum(np.equal(np.mod(finite, 1), 0)))
            if len(finite):
                self.minimum = min(self.minimum, float(finite.min()))
                self.maximum = max(self.maximum, float(finite.max()))
                self.total += float(finite.sum())
                self.squares += float(np.square(finite).sum())
                self.cubes += float(np.power(finite, 3).sum())
        if not self.capped:
            self.distinct.update(present)
            if len(self.distinct) > 2 * VOCAB_MAX:
                self.capped = True

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def numeric(self) -> bool:
        return self.present > 0 and self.numbers == self.present

    @property
    def whole(self) -> bool:
        return self.numeric and self.integers == self.numbers

    @property
    def n_distinct(self) -> int:
        return len(self.distinct) if not self.capped else 10 ** 9

    def skew(self) -> float:
        n = self.numbers
        if n < 3:
            return 0.0
        mean = self.total / n
        var = self.squares / n - mean ** 2
        if var <= 0:
            return 0.0
        third = self.cubes / n - 3 * mean * self.squares / n + 2 * mean ** 3
        return third / var ** 1.5


def read_columns(data: str, delimiter: str | None = None):
    """(column order, {name: Column}, sample frame) over every row of FILE or DIR's files."""
    import pandas as pd

    from data import readers

    path = Path(data)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if path.is_dir() else [path]
    if not files:
        raise ProblemInitError(f"no files under {data}")
    columns: dict[str, Column] = {}
    order: list[str] = []
    samples = []
    kept = 0
    rng = np.random.default_rng(0)
    for file in files:
        try:
            batches = readers.read_batches(str(file), delimiter)
            for batch in batches:
                frame = batch.to_pandas()
                for name in frame.columns:  # CSV cells come as bytes: text, as a person reads
                    if frame[name].dtype == object:
                        frame[name] = frame[name].map(
                            lambda v: (v.decode("utf-8", "replace") or None) if isinstance(v, bytes)
                            else v)
                for name in frame.columns:
                    if name not in columns:
                        columns[name] = Column(name)
                        order.append(name)
                    columns[name].add(frame[name].tolist())
                if kept < SAMPLE_ROWS:
                    take = frame if kept + len(frame) <= SAMPLE_ROWS else \
                        frame.sample(SAMPLE_ROWS - kept, random_state=int(rng.integers(1 << 30)))
                    samples.append(take.astype(object).where(take.notna(), None))
                    kept += len(take)
        except readers.InputError as e:
            raise ProblemInitError(f"{file}: {e}") from None
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    return order, columns, sample


def infer_task(label: Column, task: str | None) -> str:
    if task:
        return task
    if label.numeric and not (label.whole and label.n_distinct <= 10):
        return "regression"
    return "binary" if label.n_distinct == 2 else "multiclass"


def class_name(value: Any) -> str:
    from models.problem import _class_name

    return _class_name(value)


def check_label(label: Column | None, name: str, task: str, order: list[str]) -> None:
    if label is None:
        raise ProblemInitError(f"no column {name!r} in the data; its columns: "
                               f"{', '.join(order[:30])}")
    if label.present == 0 or label.n_distinct < 2:
        raise ProblemInitError(f"the label {name!r} is constant ({label.n_distinct} value): "
                               "nothing to learn")
    if task != "regression" and label.n_distinct > MAX_CLASSES:
        raise ProblemInitError(
            f"the label {name!r} has {'over ' if label.capped else ''}"
            f"{min(label.n_distinct, 2 * VOCAB_MAX):,} distinct values: nearly unique (an "
            "id?), not classes; pass --task regression if it is a number to predict")
    if task == "regression" and not label.numeric:
        raise ProblemInitError(f"the label {name!r} is not a number: --task regression needs "
                               "one")


def time_format(column: Column, sample, name: str) -> str:
    """unix_seconds or iso8601, or a one-line refusal."""
    values = sample[name].dropna()
    if column.numeric and column.whole:
        if column.minimum >= 0 and column.maximum < 1e11:
            return "unix_seconds"
        raise ProblemInitError(f"time column {name!r} holds numbers from {column.minimum:g} to "
                               f"{column.maximum:g}: not UNIX seconds")
    from data.readers import iso_seconds

    texts = [str(v) for v in values]
    _, valid = iso_seconds(texts)
    if not len(texts) or not valid.all():
        bad = texts[int((~valid).argmax())] if len(texts) else "no value"
        raise ProblemInitError(f"time column {name!r} cannot be parsed as UNIX seconds or "
                               f"ISO 8601 (e.g. {bad!r})")
    return "iso8601"


def single_column_signal(sample, label_values: np.ndarray, task: str) -> dict[str, float]:
    """How well each column alone predicts the label on the sample (the leakage check's
    measure: AUC, mean one-vs-rest AUC, or R²), first half fitted, second half scored."""
    from pipeline.components.leakage_check import single_feature_auc

    half = len(sample) // 2
    if half < 10:
        return {}
    return single_feature_auc(sample.iloc[:half], sample.iloc[half:], label_values[:half],
                              label_values[half:], task, skip=set())


def feature_for(column: Column, rows: int):
    """(Feature or None, why) for one column."""
    from models.problem import Feature, Kind

    name = column.name
    if column.present == 0:
        return None, "left out: empty in every row"
    if column.n_distinct == 1:
        return None, "left out: one value in every row"
    if column.numeric:
        dtype = "int" if column.whole else "float"
        if column.whole and column.n_distinct == column.present and column.present > 50 and \
                column.present == rows:
            return None, "left out: unique on every row, an identifier"
        if COORDINATE.search(name) and column.minimum >= -180 and column.maximum <= 180:
            return Feature(name, Kind.GEO, dtype, buckets=20, embedding_dim=4,
                           why="coordinates: z-score and 20 quantile buckets"), ""
        if column.whole and column.minimum >= 0 and column.maximum < 100 and \
                column.n_distinct <= 32:
            size = int(column.maximum) + 1
            return Feature(name, Kind.INT_CATEGORY, dtype, size=size,
                           embedding_dim=max(2, min(8, round(size ** 0.5))),
                           why=f"small-integer category: {column.n_distinct} values in "
                               f"0..{int(column.maximum)}"), ""
        skew = column.skew()
        log = column.minimum >= 0 and skew > 2.0
        why = f"log: skew {skew:.1f}" if log else f"numeric: z-score (skew {skew:.1f})"
        return Feature(name, Kind.NUMERIC, dtype, log=log, why=why), ""
    if column.n_distinct >= column.present * 0.95 and column.present > 50:
        return None, "left out: unique on every row, an identifier"
    if column.n_distinct <= VOCAB_MAX:
        n = column.n_distinct
        return Feature(name, Kind.VOCAB, "string", top_k=n, oov=max(1, n // 10),
                       embedding_dim=max(2, min(16, round(n ** 0.5))),
                       why=f"vocabulary: {n} values"), ""
    buckets = 1000
    return Feature(name, Kind.HASHED, "string", buckets=buckets, embedding_dim=8,
                   why=f"hashed into {buckets} buckets: over {VOCAB_MAX} values"), ""


def write_schema(out: Path, order: list[str], columns: dict[str, Column], sample,
                 label_columns: set[str], task: str, classes: list[str],
                 string_columns: set[str]) -> Path:
    """TFDV's schema inferred from the sample, then: presence from the missing rates over
    every row, the label kept out of serving, the classes as the label's domain."""
    import pandas as pd
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    typed = sample.copy()
    for name in order:
        if name in string_columns or not columns[name].numeric:
            typed[name] = typed[name].astype(object)
        else:
            typed[name] = pd.to_numeric(typed[name], errors="coerce")
    stats = tfdv.generate_statistics_from_dataframe(typed)
    schema = tfdv.infer_schema(stats, infer_feature_shape=False)
    schema.default_environment.extend(["TRAINING", "SERVING"])
    del schema.string_domain[:]
    for feature in schema.feature:
        column = columns[feature.name]
        feature.ClearField("domain")
        feature.ClearField("presence")
        feature.ClearField("value_count")
        feature.ClearField("shape")
        if column.numeric and feature.name not in string_columns:
            feature.type = schema_pb2.INT if column.whole else schema_pb2.FLOAT
        else:
            feature.type = schema_pb2.BYTES
        if column.missing == 0:
            feature.presence.min_fraction = 1.0
            feature.presence.min_count = 1
            feature.shape.dim.add().size = 1
        else:
            feature.value_count.max = 1
        if feature.name in label_columns:
            feature.not_in_environment.append("SERVING")
            if task == "multiclass":
                feature.type = schema_pb2.BYTES if not columns[feature.name].numeric else \
                    feature.type
                if feature.type == schema_pb2.BYTES:
                    feature.string_domain.value.extend(classes)
                else:
                    values = [float(c) for c in classes]
                    feature.int_domain.min = int(min(values))
                    feature.int_domain.max = int(max(values))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "schema.pbtxt"
    tfdv.write_schema_text(schema, str(path))
    header = ("# Curated schema written by `python -m tools.problem init` from the data, for\n"
              "# review like code. Required columns carry `shape` (present in every row); the\n"
              "# others may be absent. The label is kept out of the SERVING environment.\n")
    path.write_text(header + path.read_text())
    return path


def init(args: argparse.Namespace) -> list[str]:
    from models import problem as P

    order, columns, sample = read_columns(args.data, args.delimiter)
    rows = max((c.rows for c in columns.values()), default=0)
    label = columns.get(args.label)
    task = infer_task(label, args.task) if label else (args.task or "binary")
    check_label(label, args.label, task, order)
    for name in (args.time_column, args.group_column, args.key_column):
        if name and name not in columns:
            raise ProblemInitError(f"no column {name!r} in the data; its columns: "
                                   f"{', '.join(order[:30])}")
    label_spec: dict[str, Any] = {"name": args.label, "column": args.label}
    classes: list[str] = []
    counts = sample[args.label].dropna().map(class_name).value_counts() \
        if task != "regression" else None
    if task == "binary":
        values = sorted(counts.index.tolist())
        if len(values) != 2:
            raise ProblemInitError(f"the label {args.label!r} has {len(values)} values, not "
                                   "2: --task multiclass, or a rule in problem.yaml")
        positive = class_name(args.positive) if args.positive is not None else \
            counts.idxmin()  # the rarer class: what is usually asked for
        if positive not in values:
            raise ProblemInitError(f"--positive {args.positive!r} is not a value of "
                                   f"{args.label!r} ({values})")
        label_spec["positive"] = positive
        smallest = int(counts.min())
    elif task == "multiclass":
        classes = sorted(counts.index.tolist(), key=lambda c: (len(c), c))
        label_spec["classes"] = classes
        smallest = int(counts.min())
    else:
        smallest = label.present
        label_spec["log"] = bool(label.minimum >= 0 and label.skew() > 2.0)
    if smallest < MIN_ROWS[task]:
        per = "rows of its rarest class" if task != "regression" else "labelled rows"
        raise ProblemInitError(f"too few rows for a {task} task: {smallest} {per}, at least "
                               f"{MIN_ROWS[task]} needed")
    time_fmt = time_format(columns[args.time_column], sample, args.time_column) \
        if args.time_column else "unix_seconds"
    label_values = P.Problem(
        "x", task, P.Label(**{**label_spec, "classes": tuple(classes)}),
        (P.Feature("_", P.Kind.NUMERIC, "float"),)).raw_labels(
        {args.label: sample[args.label].tolist()})
    signal = single_column_signal(sample.drop(columns=[args.label]), label_values, task)

    features, unused, notes = [], {}, []
    special = {args.label, args.time_column, args.group_column, args.key_column} - {None, ""}
    for name in order:
        if name in special:
            if name == args.time_column:
                unused[name] = "the time column: the out-of-time split and its slices"
            elif name in (args.group_column, args.key_column):
                unused[name] = "the group column" if name == args.group_column else \
                    "the key column: passed through batch predictions"
            continue
        if signal.get(name, 0.0) > LEAK_SIGNAL:
            unused[name] = f"left out: AUC {signal[name]:.3f} alone, a leak?"
            notes.append(f"{name}: predicts the label alone (AUC {signal[name]:.3f}); left "
                         "out: keep it only if it is known when predicting")
            continue
        feature, why = feature_for(columns[name], rows)
        if feature is None:
            unused[name] = why
            continue
        features.append(feature)
    if not features:
        raise ProblemInitError("no column is left to learn from: " + "; ".join(
            f"{k}: {v}" for k, v in unused.items()))
    name = args.name or re.sub(r"[^a-z0-9]+", "-", f"{Path(args.data).stem}-{args.label}"
                                                   .lower()).strip("-")
    kinds = {f.name: f for f in features}
    slices = [f.name for f in features if f.kind is P.Kind.VOCAB and f.top_k <= 20][:2]
    blessing = P.DEFAULT_BLESSING[task]
    if task == "regression":  # better than always answering the mean: RMSE below the spread
        mean = label.total / label.numbers
        spread = math.sqrt(max(label.squares / label.numbers - mean ** 2, 0.0))
        blessing = P.Blessing("rmse", float(f"{spread:.4g}"), 0.0, False)
    problem = P.Problem(
        name=name, task=task,
        label=P.Label(**{**label_spec, "classes": tuple(classes)}),
        features=tuple(features), time_column=args.time_column or "",
        time_format=time_fmt, group_column=args.group_column or "",
        key_column=args.key_column or "", unused=unused, slices=tuple(slices),
        blessing=blessing)
    out = Path(args.out)
    string_columns = {n for n, f in kinds.items() if f.dtype == "string"}
    write_schema(out, order, columns, sample, {args.label}, task, classes, string_columns)
    text = problem.to_yaml()
    (out / "problem.yaml").write_text(
        f"# Written by `python -m tools.problem init` from {args.data} ({rows:,} rows): review\n"
        "# each feature's kind and reason, the label, and the blessing before the first run.\n"
        + text)
    said: list[str] = []
    said.append(f"tools.problem: {rows:,} rows, {len(order)} columns -> {out}/problem.yaml and "
          f"{out}/schema.pbtxt")
    said.append(f"  task {task}" + (f", positive class {label_spec['positive']!r}"
                              if task == "binary" else f", classes {classes}"
                              if task == "multiclass" else
                              f", label {'log1p' if label_spec['log'] else 'as is'}"))
    said.append(f"  {len(features)} features: " + ", ".join(f"{f.name} ({f.kind.value})"
                                                      for f in features))
    if unused:
        said.append("  left out: " + "; ".join(f"{k} ({v})" for k, v in unused.items()))
    said.append(f"  blessing: {blessing.metric} {'>=' if blessing.higher_is_better else '<='} "
          f"{blessing.threshold:g}, no worse than the last blessed model by more than "
          f"{blessing.max_change:g}")
    said.append("Review: " + ("; ".join(notes) + "; " if notes else "") + "each feature's kind and "
          "reason, the required columns (schema: `shape`), the blessing threshold.")
    root = args.data if Path(args.data).is_dir() else Path(args.data).parent
    said.append(f"Next: make run ARGS=\"--problem-dir {out} --data-root {root}\"")
    return said


def main(argv: list[str] | None = None) -> int:
    from settings import quiet

    parser = argparse.ArgumentParser(prog="python -m tools.problem", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    init_parser = commands.add_parser("init", help="write problem.yaml and schema.pbtxt "
                                                   "from a table and its label column")
    init_parser.add_argument("--data", required=True, help="a CSV or Parquet file, or a folder")
    init_parser.add_argument("--label", required=True, help="the column to predict")
    init_parser.add_argument("--out", required=True, help="the folder to write (the problem)")
    init_parser.add_argument("--task", choices=("binary", "multiclass", "regression"),
                             help="default: inferred from the label's values")
    init_parser.add_argument("--positive", help="binary: the positive class (default: the "
                                                "rarer one)")
    init_parser.add_argument("--time-column", help="when each row happened (UNIX seconds or "
                                                   "ISO 8601): the out-of-time split")
    init_parser.add_argument("--group-column", help="rows sharing a value stay on one side")
    init_parser.add_argument("--key-column", help="identifies a row (batch predictions)")
    init_parser.add_argument("--name", help="the pipeline's name (default: from the data)")
    init_parser.add_argument("--delimiter", default=None, help="CSV delimiter (default: "
                                                                "detected)")
    init_parser.add_argument("--force", action="store_true",
                             help="overwrite an existing problem.yaml")
    quiet.add_arguments(init_parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    from settings.layout import SCHEMA_DIR

    if out.resolve() == SCHEMA_DIR.resolve():
        print("tools.problem: refusing to overwrite the taxi's schema/; write elsewhere",
              file=sys.stderr)
        return 2
    if (out / "problem.yaml").exists() and not args.force:
        print(f"tools.problem: {out}/problem.yaml exists; --force to overwrite it",
              file=sys.stderr)
        return 2
    if not Path(args.data).exists():
        print(f"tools.problem: {args.data} does not exist", file=sys.stderr)
        return 2
    from settings.layout import Layout

    said, error, log_file = quiet.run_quietly(lambda: init(args), args, Layout.load().output_root,
                                              "problem", own=("tools",), own_format="%(message)s",
                                              expected=(ProblemInitError,))
    if error is not None:
        print(f"tools.problem: {error}", file=sys.stderr)
        return 2
    print("\n".join(said))
    return 0


if __name__ == "__main__":
    sys.exit(main())
