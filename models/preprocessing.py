"""preprocessing_fn: the one tf.Transform graph, run by Transform and embedded in the model.

Whatever shapes the training data here is exported inside the served model, so serving
never re-implements it. Treatment follows each feature's Kind, and the label follows the
task, as the active problem defines them (models/problem.py): Transform hands it in
custom_config, so a compiled job carries it.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

import models  # noqa: F401  (Keras 2 before TensorFlow)
from models import features as F
from models import problem as P


def _dense(x: tf.Tensor | tf.SparseTensor, default) -> tf.Tensor:
    """A rank-1 dense tensor; absent values (sparse optional features) become `default`."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
        )
    return tf.reshape(x, [-1])


def _present(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """True where the example carries a value."""
    if isinstance(x, tf.SparseTensor):
        ones = tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.bool), [x.dense_shape[0], 1])
        return tf.reshape(tf.sparse.to_dense(ones, default_value=False), [-1])
    return tf.ones_like(tf.reshape(x, [-1]), tf.bool)


def _observed(x, log: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """(float values with gaps as 0, where a value is present), log1p'd for heavy tails."""
    present = _present(x)
    values = tf.cast(_dense(x, 0), tf.float32)
    if log:
        values = tf.math.log1p(tf.maximum(values, 0.0))
    return values, present


def moments(columns: list[tuple[tf.Tensor, tf.Tensor]]) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance of the observed values of every column, in one analyzer.

    One analyzer per statistic and column (tft.mean, tft.var) was two Beam combiners per
    numeric feature, each a branch of the analysis graph; here one tft.sum over the columns
    stacked side by side, [count, sum, sum of squares] per column, in float64 so the
    variance of a column far from zero (a latitude) keeps its digits. Observed values only,
    still one pass: filling the gaps with the mean first would need the mean before the
    variance, a second analysis phase.
    """
    present = tf.stack([tf.cast(p, tf.float64) for _, p in columns], axis=1)
    values = tf.stack([tf.cast(v, tf.float64) for v, _ in columns], axis=1) * present
    sums = tft.sum(tf.concat([present, values, values * values], axis=1),
                   reduce_instance_dims=False, name="moments")
    count, total, squares = tf.split(sums, 3)
    count = tf.maximum(count, 1.0)
    mean = total / count
    var = tf.maximum(squares / count - mean * mean, 0.0)
    return tf.cast(mean, tf.float32), tf.cast(var, tf.float32)


def _z_score(values: tf.Tensor, present: tf.Tensor, mean: tf.Tensor,
             var: tf.Tensor) -> tf.Tensor:
    """Z-score of the observed values; missing values take the mean (z = 0). A constant
    column (variance 0) is only centred, as tft.scale_to_z_score does."""
    centred = values - mean
    scaled = tf.where(var > 0, centred * tf.math.rsqrt(tf.maximum(var, 1e-30)), centred)
    return tf.where(present, scaled, tf.zeros_like(scaled))


def _bucket(values: tf.Tensor, present: tf.Tensor, buckets: int, name: str) -> tf.Tensor:
    """A coordinate's quantile bucket; missing coordinates get bucket `buckets`."""
    boundaries = tft.quantiles(tf.boolean_mask(values, present), buckets,
                               epsilon=min(1.0 / buckets, 0.01), name=f"{name}_quantiles")
    bucket = tft.apply_buckets(values, boundaries)
    return tf.where(present, bucket, tf.cast(buckets, tf.int64))


def _int_category(x, size: int) -> tf.Tensor:
    """Known small range 0..size-1; missing or out-of-range values map to index `size`."""
    values = tf.cast(_dense(x, -1), tf.int64)
    in_range = (values >= 0) & (values < size)
    return tf.where(in_range, values, tf.constant(size, tf.int64))


def _vocab(x, feature: F.Feature) -> tf.Tensor:
    """Vocabulary of the `top_k` most frequent values plus OOV hash buckets.

    Integer ids (census tracts) are turned into strings first so that missing ('') and
    unseen ids land in OOV buckets rather than colliding with a real id.
    """
    if x.dtype != tf.string:
        x = (
            tf.SparseTensor(x.indices, tf.strings.as_string(x.values), x.dense_shape)
            if isinstance(x, tf.SparseTensor)
            else tf.strings.as_string(x)
        )
    values = _dense(x, "")
    return tft.compute_and_apply_vocabulary(
        values,
        top_k=feature.top_k,
        num_oov_buckets=feature.oov,
        vocab_filename=feature.name,
        name=f"{feature.name}_vocabulary",
    )


def _hashed(x, buckets: int) -> tf.Tensor:
    """Many distinct values (ids, free text): hashed into `buckets`, no vocabulary to learn;
    missing values hash as ''."""
    if x.dtype != tf.string:
        x = (tf.SparseTensor(x.indices, tf.strings.as_string(x.values), x.dense_shape)
             if isinstance(x, tf.SparseTensor) else tf.strings.as_string(x))
    return tf.strings.to_hash_bucket_fast(_dense(x, ""), buckets)


class _TfOps:
    """The few functions a label rule needs, in TensorFlow (models/problem.py: Rule)."""

    logical_not = staticmethod(tf.logical_not)
    logical_and = staticmethod(tf.logical_and)
    logical_or = staticmethod(tf.logical_or)

    @staticmethod
    def compare(op: str, a, b):
        return {">": tf.greater, ">=": tf.greater_equal, "<": tf.less, "<=": tf.less_equal,
                "==": tf.equal, "!=": tf.not_equal}[op](a, b)


def _as_text(x) -> tf.Tensor:
    """A raw column as strings, as the problem's class names are written (1.0 -> "1")."""
    if x.dtype == tf.string:
        return tf.strings.strip(_dense(x, ""))
    values = _dense(x, 0)
    if values.dtype.is_floating:
        whole = tf.equal(values, tf.round(values))
        return tf.where(whole, tf.strings.as_string(tf.cast(values, tf.int64)),
                        tf.strings.as_string(values))
    return tf.strings.as_string(values)


def rule_values(rule: P.Rule, inputs: dict) -> tf.Tensor:
    """A problem's rule over raw columns, 0/1 per row (absent: 0 or "", as in Python)."""
    texts = rule.string_columns()
    columns = {c: _dense(inputs[c], "") if c in texts
               else tf.cast(_dense(inputs[c], 0), tf.float32) for c in rule.columns}
    return tf.cast(rule.evaluate(columns, _TfOps), tf.int64)


def label(inputs: dict, problem: P.Problem) -> tf.Tensor:
    """The label as the model learns it: 0/1 (binary), the class index (multiclass; -1 for a
    value outside the problem's classes, which the schema's domain keeps out), or the value
    (regression, log1p'd when the problem says so)."""
    spec = problem.label
    if spec.rule:
        return rule_values(P.Rule(spec.rule), inputs)
    raw = inputs[spec.column]
    if problem.task == "regression":
        value = tf.cast(_dense(raw, 0), tf.float32)
        return tf.math.log1p(tf.maximum(value, 0.0)) if spec.log else value
    text = _as_text(raw)
    if problem.task == "binary":
        return tf.cast(tf.equal(text, spec.positive), tf.int64)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(spec.classes)),
                                            tf.range(len(spec.classes), dtype=tf.int64)),
        default_value=-1)
    return table.lookup(text)


def civil_date(seconds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(year, month) in UTC of UNIX seconds, with integer ops only (the proleptic Gregorian
    calendar, as Python's datetime): TensorFlow has no calendar op."""
    days = tf.math.floordiv(tf.cast(seconds, tf.int64), 86400) + 719468
    era = tf.math.floordiv(days, 146097)
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524
                   - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    month = tf.where(month_from_march < 10, month_from_march + 3, month_from_march - 9)
    year = year_of_era + era * 400 + tf.cast(month <= 2, tf.int64)
    return year, month


def time_slices(seconds: tf.Tensor | tf.SparseTensor) -> dict[str, tf.Tensor]:
    """The year and "YYYY-Qn" of each row, for the Evaluator's slices by time (0 and ""
    where the time is absent)."""
    present = _present(seconds)
    year, month = civil_date(_dense(seconds, 0))
    quarter = tf.strings.join([tf.strings.as_string(year), "-Q",
                               tf.strings.as_string((month - 1) // 3 + 1)])
    return {F.YEAR_SLICE: tf.where(present, year, tf.zeros_like(year)),
            F.QUARTER_SLICE: tf.where(present, quarter, tf.fill(tf.shape(quarter), ""))}


def preprocessing_fn(inputs: dict[str, tf.Tensor | tf.SparseTensor],
                     custom_config: dict | None = None) -> dict[str, tf.Tensor]:
    problem = P.from_custom_config(custom_config)
    outputs: dict[str, tf.Tensor] = {}
    # Numeric and geo columns are z-scored by moments from one analyzer (see `moments`).
    scaled = [f for f in problem.features if f.kind in (F.Kind.NUMERIC, F.Kind.GEO)]
    columns = [_observed(inputs[f.name], f.kind is F.Kind.NUMERIC and f.log) for f in scaled]
    if columns:
        mean, var = moments(columns)
        for i, (feature, (values, present)) in enumerate(zip(scaled, columns, strict=True)):
            outputs[feature.transformed] = _z_score(values, present, mean[i], var[i])
            if feature.kind is F.Kind.GEO:
                outputs[feature.bucket_name] = _bucket(values, present, feature.buckets,
                                                       feature.name)
    for feature in problem.features:
        x = inputs[feature.name]
        if feature.kind in (F.Kind.NUMERIC, F.Kind.GEO):
            continue
        if feature.kind is F.Kind.INT_CATEGORY:
            outputs[feature.transformed] = _int_category(x, feature.size)
        elif feature.kind is F.Kind.VOCAB:
            outputs[feature.transformed] = _vocab(x, feature)
        elif feature.kind is F.Kind.HASHED:
            outputs[feature.transformed] = _hashed(x, feature.buckets)
        else:  # pragma: no cover - a new Kind without a treatment
            raise ValueError(f"no transform for {feature.kind} ({feature.name})")
    # The label's sources are absent when serving; tf.Transform prunes this output then.
    if all(c in inputs for c in problem.label.columns()):
        outputs[problem.label_xf] = label(inputs, problem)
    observed = P.Rule(problem.label.observed) if problem.label.observed else None
    if observed and all(c in inputs for c in observed.columns):
        outputs[F.OBSERVED_SLICE] = rule_values(observed, inputs)
    # Likewise when serving, where no time is sent: only the Evaluator slices on these.
    if problem.time_column in inputs and problem.time_format == "unix_seconds":
        outputs.update(time_slices(inputs[problem.time_column]))
    return outputs
