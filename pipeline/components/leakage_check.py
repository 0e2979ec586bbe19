"""LeakageCheck: what would make the evaluation flatter the model, found before it trains.

It reads the rows the model will train and be judged on (SpanWindow's train splits and eval
split) and records in `leakage.json`, for AnomalyGate to act on and the report to show:

- **overlap** (the gate stops the run): with a split by time, a training row at or after
  the first eval row; with a split by group, a value of the partition feature on both sides.
  A model judged on rows from the period (or the customers) it learned from is judged on
  the past, not on what it will meet.
- **duplicates** (flagged): eval rows whose model features and label are exactly those of a
  training row, counted and shown: the model is judged on rows it has seen.
- **a single feature that predicts the label almost alone** (flagged): its AUC on the eval
  split, fitted on the training rows (the value itself, and its label rate per category or
  per quantile bin), above `max_single_auc`: a column filled in after the outcome.
- **features absent when serving** (flagged): a model feature outside the schema's SERVING
  environment, or one that the served rows in the request log lack much more often than
  the training rows: available in training, not when it matters.
"""


import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts

from models import features as F
from reporting.artifacts import LEAKAGE_FILE, utc

log = logging.getLogger(__name__)

EVAL = "eval"
EXAMPLES = 5  # rows shown per finding
MIN_SERVED_ROWS = 100  # fewer served rows tell nothing about how often a value is absent
SERVED_ABSENCE_GAP = 0.2  # served absent share above the training one by more: flagged
BATCH = 8192


def frames(uri: str, split: str, schema_uri: str = "") -> Iterator[pd.DataFrame]:
    """The rows of one split, a batch at a time, one column per feature: numbers as float64
    (NaN: no value), text as bytes (None: no value). TensorFlow's example parser reads them
    ten times faster than decoding every feature into Arrow. A batch whose values do not
    have the types the first rows had (rows the data gate is about to stop) is decoded as
    it is instead."""
    import tensorflow as tf

    files = sorted(fileio.glob(os.path.join(uri, f"Split-{split}", "*")))
    if not files:
        return
    batches = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(BATCH).prefetch(2)
    spec: dict[str, Any] = {}
    for records in batches:
        if not spec:
            spec = _parse_spec(records.numpy().tolist(), schema_uri)
        try:
            parsed = tf.io.parse_example(records, spec)
        except tf.errors.InvalidArgumentError:  # a value of another type than the first's
            yield _decoded(records.numpy().tolist())
            continue
        rows = int(records.shape[0])
        yield pd.DataFrame({name: _first_values(parsed[name], rows) for name in spec})


def _parse_spec(first: list[bytes], schema_uri: str) -> dict[str, Any]:
    """Each feature's type as the first records have it, and from the schema for features
    they lack (the schema is what the data should be; the rows are what it is)."""
    import pyarrow as pa
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    types: dict[str, Any] = {}
    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(first)
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            item = column.type.value_type
            types[name] = tf.float32 if pa.types.is_floating(item) else \
                tf.int64 if pa.types.is_integer(item) else tf.string
    if schema_uri and fileio.exists(os.path.join(schema_uri, "schema.pbtxt")):
        from tensorflow_metadata.proto.v0 import schema_pb2

        kinds = {schema_pb2.FLOAT: tf.float32, schema_pb2.INT: tf.int64,
                 schema_pb2.BYTES: tf.string}
        for feature in _schema(schema_uri).feature:
            if feature.type in kinds:
                types.setdefault(feature.name, kinds[feature.type])
    return {name: tf.io.VarLenFeature(kind) for name, kind in sorted(types.items())}


def _decoded(records: list[bytes]) -> pd.DataFrame:
    """One batch read record by record, each value with its own type (slow, and only for
    rows whose types differ from one another: data the gate is about to stop)."""
    import tensorflow as tf

    columns: dict[str, list] = {}
    for i, record in enumerate(records):
        for name, feature in tf.train.Example.FromString(record).features.feature.items():
            kind = feature.WhichOneof("kind")
            values = getattr(feature, kind).value if kind else []
            columns.setdefault(name, [None] * len(records))[i] = values[0] if values else None
    return pd.DataFrame({name: np.array(values, dtype=object)
                         for name, values in columns.items()})


def _first_values(column, rows: int) -> np.ndarray:
    """Each row's first value of a parsed (sparse) column: float64 with NaN for numbers,
    bytes with None for text (decoded only to show)."""
    indices, values = column.indices.numpy(), column.values.numpy()
    first = indices[:, 1] == 0
    out = np.full(rows, None, dtype=object) if values.dtype == object else np.full(rows, np.nan)
    out[indices[first, 0]] = values[first]
    return out


def _present(values: pd.Series) -> list:
    """Values as Python objects with None for absent (NaN), as a CSV reader gives them."""
    return [None if isinstance(v, float) and v != v else v for v in values.tolist()]


def labels(frame: pd.DataFrame) -> np.ndarray:
    """preprocessing_fn's label of each row, by the problem's definition (absent: 0), in
    float32 as it computes it (a tip of exactly 20% is not a big tip there either)."""
    columns = {c: _present(frame[c]) if c in frame else [None] * len(frame)
               for c in F.PROBLEM.label.columns()}
    return F.PROBLEM.raw_labels(columns)


def fingerprints(frame: pd.DataFrame) -> np.ndarray:
    """One number per row of its model features and label source: equal rows, equal numbers.
    Columns keep their types from batch to batch, so each is hashed as it is (no text)."""
    columns = [c for c in (*F.BY_NAME, *F.LABEL_SOURCES) if c in frame]
    return pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()


class Side:
    """What is kept of one side (train or eval) while its batches go by."""

    def __init__(self, sample_rows: int, seed: int):
        self.rows = 0
        self.time: list[float] = []
        self.groups: set = set()
        self.prints: list[np.ndarray] = []
        self.sample = pd.DataFrame()
        self.sample_rows = sample_rows
        self.rng = np.random.default_rng(seed)

    def add(self, frame: pd.DataFrame, time_column: str, group: str, keep_prints: bool) -> None:
        self.rows += len(frame)
        if time_column in frame:
            seconds = pd.to_numeric(frame[time_column], errors="coerce").dropna()
            if len(seconds):
                self.time = [int(min([seconds.min(), *self.time[:1]])),
                             int(max([seconds.max(), *self.time[1:]]))]
        if group and group in frame:
            self.groups.update(frame[group].dropna().tolist())
        if keep_prints:
            self.prints.append(fingerprints(frame))
        # A uniform sample of every row so far: the rows with the smallest random keys. Once
        # it is full, a row whose key is above the largest kept cannot enter it.
        keys = self.rng.random(len(frame))
        if len(self.sample) >= self.sample_rows:
            chosen = keys < self.sample["_key"].max()
            frame, keys = frame[chosen], keys[chosen]
        keyed = frame.assign(_key=keys)
        kept = pd.concat([self.sample, keyed], ignore_index=True) if len(self.sample) else keyed
        self.sample = kept.nsmallest(self.sample_rows, "_key") if len(kept) > self.sample_rows \
            else kept

    def frame(self) -> pd.DataFrame:
        return self.sample.drop(columns="_key") if len(self.sample) else pd.DataFrame()


def single_feature_auc(train: pd.DataFrame, evaluation: pd.DataFrame,
                       y_train: np.ndarray | None = None, y_eval: np.ndarray | None = None,
                       task: str = "", skip: set | None = None) -> dict[str, float]:
    """Each column's signal on eval as the only predictor, fitted on train: the value itself
    (either direction) and its label rate per category or per quantile bin, the best of
    them. Binary: AUC; multiclass: the mean of one-vs-rest AUCs over the classes;
    regression: R² of the column's mean label per category or bin (0 when worse than the
    mean). Labels, task and the columns to skip default to the active problem's."""
    y_train = labels(train) if y_train is None else y_train
    y_eval = labels(evaluation) if y_eval is None else y_eval
    task = task or F.TASK
    label_columns = set(F.PROBLEM.label.columns()) if skip is None else skip
    if task == "regression":
        return _sorted(_regression_signal(train, evaluation, y_train, y_eval, label_columns))
    if task == "multiclass":
        per_class = [_binary_signal(train, evaluation, (y_train == c).astype(int),
                                    (y_eval == c).astype(int), label_columns)
                     for c in sorted(set(y_train.tolist()) & set(y_eval.tolist())) if c >= 0]
        names = set().union(*per_class) if per_class else set()
        return _sorted({n: round(float(np.mean([s.get(n, 0.5) for s in per_class])), 4)
                        for n in names})
    return _sorted(_binary_signal(train, evaluation, y_train, y_eval, label_columns))


def _sorted(found: dict[str, float]) -> dict[str, float]:
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def _keys(x_train: pd.Series, x_eval: pd.Series):
    """(numbers or None, category keys of train, of eval): quantile bins of a numeric column,
    the values of another."""
    numbers_train = pd.to_numeric(x_train, errors="coerce")
    numbers_eval = pd.to_numeric(x_eval, errors="coerce")
    if numbers_eval.notna().mean() > 0.5 and numbers_train.notna().any():
        filled = numbers_eval.fillna(numbers_train.median()).to_numpy(float)
        edges = np.unique(np.nanquantile(numbers_train.to_numpy(float), np.linspace(0, 1, 21)))
        return (filled, np.digitize(numbers_train.fillna(np.inf), edges).astype(str),
                np.digitize(numbers_eval.fillna(np.inf), edges).astype(str))
    return (None, x_train.fillna("").astype(str).to_numpy(),
            x_eval.fillna("").astype(str).to_numpy())


def _mean_by_key(keys_train, y_train, keys_eval, prior: float) -> np.ndarray:
    """Each eval row's mean training label of its key (category or bin), shrunk towards
    `prior` by 20 rows' weight; `prior` for a key training never saw."""
    means = pd.DataFrame({"k": keys_train, "y": y_train}).groupby("k")["y"].agg(
        ["sum", "count"])
    smoothed = (means["sum"] + 20 * prior) / (means["count"] + 20)
    return pd.Series(keys_eval).map(smoothed).fillna(prior).to_numpy(float)


def _binary_signal(train, evaluation, y_train, y_eval, skip: set) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    if len(set(y_eval.tolist())) < 2 or len(set(y_train.tolist())) < 2:
        return {}
    prior, found = y_train.mean(), {}
    for name in evaluation.columns:
        if name in skip or name not in train:
            continue
        filled, keys_train, keys_eval = _keys(train[name], evaluation[name])
        scores = []
        if filled is not None and np.unique(filled).size > 1:
            auc = roc_auc_score(y_eval, filled)
            scores.append(max(auc, 1 - auc))
        encoded = _mean_by_key(keys_train, y_train, keys_eval, prior)  # a category's rate
        if np.unique(encoded).size > 1:
            scores.append(roc_auc_score(y_eval, encoded))
        if scores:
            found[name] = round(float(max(scores)), 4)
    return found


def _regression_signal(train, evaluation, y_train, y_eval, skip: set) -> dict[str, float]:
    y_train, y_eval = np.asarray(y_train, float), np.asarray(y_eval, float)
    spread = float(np.sum((y_eval - y_eval.mean()) ** 2))
    if spread <= 0:
        return {}
    prior, found = y_train.mean(), {}
    for name in evaluation.columns:
        if name in skip or name not in train:
            continue
        _, keys_train, keys_eval = _keys(train[name], evaluation[name])
        encoded = _mean_by_key(keys_train, y_train, keys_eval, prior)
        r2 = 1.0 - float(np.sum((y_eval - encoded) ** 2)) / spread
        found[name] = round(max(0.0, r2), 4)
    return found


def served_absence(request_log: str, train: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per model feature, the share of served rows without it against the training rows'."""
    from serving import request_log as requests

    if not request_log or not os.path.isfile(request_log):
        return {}
    rows = [requests.features(line.record) for line in requests.read(request_log)
            if line.record is not None]
    rows = [r for r in rows if r is not None]
    if len(rows) < MIN_SERVED_ROWS:
        return {}
    served = pd.DataFrame(rows)
    out = {}
    for feature in F.FEATURES:
        values = served.get(feature.name, pd.Series([None] * len(served)))
        absent = values.isna() | values.astype(str).isin(["", "nan", "NaN", "None"])
        trained = train[feature.name].isna().mean() if feature.name in train else 0.0
        out[feature.name] = {"served": round(float(absent.mean()), 4),
                             "training": round(float(trained), 4), "rows": len(served)}
    return out


def _schema(schema_uri: str):
    """The Schema artifact's schema.pbtxt."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils

    return io_utils.parse_pbtxt_file(os.path.join(schema_uri, "schema.pbtxt"),
                                     schema_pb2.Schema())


def outside_serving(schema_uri: str) -> list[str]:
    """Model features the schema says a serving request does not carry."""
    absent = {f.name for f in _schema(schema_uri).feature if "SERVING" in f.not_in_environment}
    return sorted(set(F.BY_NAME) & absent)


def check(uri: str, split_names: list[str], split: dict[str, Any], schema_uri: str = "",
          request_log: str = "", max_single_auc: float = 0.99,
          sample_rows: int = 50_000) -> dict[str, Any]:
    """Every check on the window at `uri`; returns what leakage.json records."""
    time_column = split.get("column", F.TIME_COLUMN)
    group = split.get("feature", "") if split.get("by") == "group" else ""
    evaluation, train = Side(sample_rows, 0), Side(sample_rows, 1)
    for frame in frames(uri, EVAL, schema_uri):
        evaluation.add(frame, time_column, group, keep_prints=True)
    eval_prints = np.concatenate(evaluation.prints) if evaluation.prints else np.array([])
    shared_groups: set = set()
    duplicates, duplicate_rows = 0, []
    for name in (s for s in split_names if s != EVAL):
        for frame in frames(uri, name, schema_uri):
            train.add(frame, time_column, group, keep_prints=False)
            seen = np.isin(fingerprints(frame), eval_prints)
            duplicates += int(seen.sum())
            duplicate_rows += frame[seen].head(EXAMPLES - len(duplicate_rows)).to_dict("records")
            if group:
                shared_groups.update(set(frame[group].dropna()) & evaluation.groups)
    result: dict[str, Any] = {"split": split, "rows": {"train": train.rows,
                                                       "eval": evaluation.rows},
                              "stops": [], "flags": [],
                              "time": {"column": time_column, "train": train.time,
                                       "eval": evaluation.time}}
    _overlaps(result, split, train, evaluation, group, shared_groups)
    if duplicates:
        result["flags"].append(
            f"{duplicates:,} training row(s) have exactly the model features and label of an "
            f"eval row: the model is judged on rows it has seen (e.g. "
            f"{_brief(duplicate_rows[0])})")
    result["duplicates"] = {"count": duplicates, "examples": _jsonable(duplicate_rows)}
    aucs = single_feature_auc(train.frame(), evaluation.frame())
    result["single_feature_auc"] = aucs
    for name, auc in aucs.items():
        if auc > max_single_auc:
            result["flags"].append(
                f"feature '{name}' alone predicts the label with AUC {auc:.4f} on the eval "
                f"split (> {max_single_auc}): likely leakage, a value known only once the "
                "outcome is; check how the column is filled")
    degenerate = unobserved_categories(train.frame())
    result["unobserved_categories"] = degenerate
    observed = F.PROBLEM.label.observed
    for found in degenerate:
        said = (f"the label is {found['label']} for all but {found['other']} of the "
                f"{found['rows']:,} rows where '{found['column']}' is {found['value']!r} "
                f"({found['share']:.0%} of the training rows): is the label observed there? "
                "A model judged on them mostly learns the category")
        result["flags"].append(said + (f" (problem.yaml: the Evaluator also reports the rows "
                                        f"where {observed})" if observed else
                                        " (problem.yaml: label.observed reports the rest)"))
    for name in outside_serving(schema_uri) if schema_uri else []:
        result["flags"].append(f"model feature '{name}' is not in the schema's SERVING "
                               "environment: available in training, absent when serving")
    absence = served_absence(request_log, train.frame())
    result["served_absence"] = absence
    for name, shares in absence.items():
        if shares["served"] - shares["training"] > SERVED_ABSENCE_GAP:
            result["flags"].append(
                f"feature '{name}' is absent from {shares['served']:.0%} of {shares['rows']:,} "
                f"served rows but {shares['training']:.0%} of training rows: the model "
                "learned from a value serving rarely has")
    return result


UNOBSERVED_SHARE = 0.2  # a category this large whose label never varies is flagged
UNOBSERVED_ROWS = 100
UNOBSERVED_ODD = 0.001  # ... whose label never varies, but for this share of its rows


def unobserved_categories(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Categories (of a column of text) whose every row has the same label, covering a large
    share of the rows: where the label is probably not observed at all (the Chicago data
    records no tip on cash trips), so a model judged there mostly learns the category."""
    if F.TASK != "binary" or frame.empty:
        return []
    y = labels(frame)
    skip = set(F.PROBLEM.label.columns())
    found = []
    for name in frame.columns:
        if name in skip or pd.to_numeric(frame[name], errors="coerce").notna().mean() > 0.5:
            continue
        values = frame[name].map(_plain).fillna("").astype(str)
        stats = pd.DataFrame({"k": values, "y": y}).groupby("k")["y"].agg(["mean", "count"])
        for value, row in stats.iterrows():
            share = row["count"] / len(frame)
            rate = float(row["mean"])
            odd = round(min(rate, 1 - rate) * row["count"])  # rows with the other label
            if odd <= UNOBSERVED_ODD * row["count"] and share >= UNOBSERVED_SHARE and \
                    row["count"] >= UNOBSERVED_ROWS:
                found.append({"column": name, "value": str(_plain(value)),
                              "label": int(round(rate)), "other": int(odd),
                              "share": round(float(share), 4), "rows": int(row["count"])})
    return found


def _overlaps(result: dict, split: dict, train: Side, evaluation: Side, group: str,
              shared: set) -> None:
    if split.get("by") == "time" and train.time and evaluation.time \
            and train.time[1] >= evaluation.time[0]:
        result["stops"].append(
            f"train and eval overlap in time: the newest training row is "
            f"{utc(int(train.time[1]))}, the oldest eval row {utc(int(evaluation.time[0]))} "
            f"('{result['time']['column']}'): the evaluation would judge the model on the "
            "period it learned from (spans out of order, or a span that repeats rows?)")
    if group:
        result["groups"] = {"feature": group, "eval_values": len(evaluation.groups),
                            "shared": len(shared),
                            "examples": sorted(str(_plain(v)) for v in shared)[:EXAMPLES]}
        if shared:
            result["stops"].append(
                f"{len(shared):,} value(s) of the partition feature '{group}' are in both "
                f"train and eval (e.g. {', '.join(result['groups']['examples'])}): the split "
                "must keep each group on one side")


def _brief(row: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in list(_jsonable([row])[0].items())[:6]
                     if v is not None)


def _plain(value: Any) -> Any:
    """A value as a person reads it: text decoded, no value as None, a whole number as one
    (numbers are read as float64)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float):
        return None if value != value else int(value) if value.is_integer() else value
    return value


def _jsonable(rows: list[dict]) -> list[dict]:
    return [{k: _plain(v) for k, v in r.items()} for r in rows]


@component
def LeakageCheck(
    window: InputArtifact[standard_artifacts.Examples],
    schema: InputArtifact[standard_artifacts.Schema],
    leakage: OutputArtifact[standard_artifacts.ExampleAnomalies],
    request_log: Parameter[str] = "",
    max_single_auc: Parameter[float] = 0.99,
) -> None:
    split = json.loads(window.get_string_custom_property("split") or "{}") \
        if window.has_custom_property("split") else {}
    result = check(window.uri, artifact_utils.decode_split_names(window.split_names), split,
                   schema.uri, request_log, max_single_auc)
    leakage.split_names = window.split_names
    with fileio.open(os.path.join(leakage.uri, LEAKAGE_FILE), "w") as f:
        json.dump(result, f, indent=1, default=str)
    for line in result["flags"]:
        log.warning("leakage: %s", line)
    leakage.set_int_custom_property("stops", len(result["stops"]))
    leakage.set_int_custom_property("flags", len(result["flags"]))
