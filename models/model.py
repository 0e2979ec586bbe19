"""The Keras model, its tf.data input, run_fn for the Trainer, and the exported signatures.

Every signature runs the Transform graph inside the SavedModel, so a served request goes
through exactly the preprocessing that shaped the training data:
  serving_default     raw feature values, one tensor per feature (TF Serving REST `instances`)
  serving_examples    serialized tf.Example (gRPC Predict, TFMA, BulkInferrer)
  transform_features  serialized tf.Example -> transformed features (Evaluator)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

import models  # noqa: F401  (Keras 2 before TensorFlow)
from models import contract, fault_tolerance, progress
from models import distribution as D
from models import features as F
from models import problem as P

log = logging.getLogger(__name__)


def _autograph_skips_tf_keras() -> None:
    """Keras 2 now lives in the `tf_keras` package, which autograph's do-not-convert list
    (it names `keras`) misses: every Keras layer's source was transpiled on first trace,
    most of the Trainer's first step (benchmarks/README.md). Keras 2 is written to run
    unconverted, as it did under its old name."""
    from tensorflow.python.autograph.core import config

    if not any(isinstance(rule, config.DoNotConvert) and rule.matches("tf_keras")
               for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config.DoNotConvert("tf_keras"), *config.CONVERSION_RULES)


_autograph_skips_tf_keras()

PROBABILITY = "probabilities"  # output key: P(positive class) [batch], or [batch, classes]
PREDICTION = "predictions"  # output key of a regression: the value, [batch]
CLASSES = "classes"  # multiclass: the class names, [batch, classes], beside their probabilities
# What the training reports and the Tuner optimises, per task: (metric, higher is better).
OBJECTIVE = {"binary": ("auc", True), "multiclass": ("accuracy", True),
             "regression": ("rmse", False)}


def output_key(task: str | None = None) -> str:
    """The signatures' output: class probabilities, or a regression's value."""
    return PREDICTION if (task or F.TASK) == "regression" else PROBABILITY
EXAMPLES_INPUT = "examples"

DEFAULT_HPARAMS: dict[str, Any] = {
    "learning_rate": 0.003,
    "hidden_units": "256,128",
    "dropout": 0.3,
    "embedding_scale": 1.0,  # multiplies every feature's embedding_dim
    "l2": 0.001,  # L2 penalty on embeddings and dense kernels: without it the id-like
    # embeddings (company, census tract) memorise the train split after ~300 steps
    "batch_size": 256,
}


def hparams(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults updated with `overrides`; unknown names are a mistake, so they raise."""
    merged = dict(DEFAULT_HPARAMS)
    for key, value in (overrides or {}).items():
        if key not in merged:
            raise ValueError(f"unknown hyperparameter {key!r}; known: {sorted(merged)}")
        merged[key] = value
    return merged


# ---------------------------------------------------------------- input


def recency_weights(spans: int, half_life: float) -> list[float]:
    """Weights of `spans` spans, oldest first: halving every `half_life` spans back from the
    newest, scaled to mean 1 so the effective learning rate stays put. 0 = all equal."""
    if half_life <= 0:
        return [1.0] * spans
    raw = [0.5 ** ((spans - 1 - i) / half_life) for i in range(spans)]
    return [w * spans / sum(raw) for w in raw]


def input_fn(
    file_patterns: list[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool = True,
    repeat: bool = True,
    seed: int | None = None,
    weights: list[float] | None = None,
    raw: bool | None = None,
    holdout: float = 0.0,
    take: str = "rest",
) -> tf.data.Dataset:
    """(features, label[, weight]) batches from gzipped TFRecords of tf.Examples.

    The rows are Transform's written output, or with `raw` the rows Transform read, which go
    through the same Transform graph a batch at a time (None: told apart by the first
    record). Records are cached serialized (small), shuffled, batched, then parsed a batch
    at a time: one vectorised parse per batch, on parallel threads, with prefetch. With
    `weights` (one per pattern, e.g. per span) each example carries its pattern's weight.
    With `holdout`, that random share of the records (by a hash of each record, the same in
    every process) is set aside: `take="rest"` reads the others, `take="holdout"` only it.
    """
    per_pattern = [sorted(tf.io.gfile.glob(pattern)) for pattern in file_patterns]
    files = [f for group in per_pattern for f in group]
    if not files:
        raise FileNotFoundError(f"no examples match {file_patterns}")
    transformed = transformed_parser(
        tf_transform_output, examples_are_raw(files) if raw is None else raw)
    if weights is None:
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP",
                                     num_parallel_reads=tf.data.AUTOTUNE)
    else:
        if len(weights) != len(file_patterns):
            raise ValueError(f"{len(weights)} weights for {len(file_patterns)} file patterns")
        file_weights = [w for w, group in zip(weights, per_pattern, strict=True) for _ in group]
        ds = tf.data.Dataset.from_tensor_slices((files, file_weights)).interleave(
            lambda f, w: tf.data.TFRecordDataset(f, compression_type="GZIP").map(
                lambda record: (record, w)),
            cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE)
    if holdout > 0:
        ds = ds.filter(_holdout_filter(holdout, take))
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(50_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=False)

    def parse(serialized, weight=None):
        parsed = transformed(serialized)
        label = parsed[F.LABEL_XF]
        features = {k: parsed[k] for k in model_input_names()}
        return (features, label) if weight is None else (features, label, weight)

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


HOLDOUT_BUCKETS = 1000


def _holdout_filter(share: float, take: str) -> Callable[..., tf.Tensor]:
    if take not in ("rest", "holdout"):
        raise ValueError(f"take must be 'rest' or 'holdout', not {take!r}")
    cut = round(share * HOLDOUT_BUCKETS)

    def keep(record, *_weight):
        held = tf.strings.to_hash_bucket_fast(record, HOLDOUT_BUCKETS) < cut
        return held if take == "holdout" else tf.logical_not(held)

    return keep


def holdout_auc(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                train_files: list[str], share: float, raw: bool | None) -> dict[str, Any]:
    """The model's figure on the share of the training period it did not train on: what a
    random split of the past would report (exact, over every held-out row): AUC (binary),
    accuracy (multiclass) or RMSE (regression), under the key `auc` for a binary task and
    `metric`/`value` for every task."""
    from sklearn.metrics import roc_auc_score

    data = holdout_batches(train_files, tf_transform_output, share, raw)
    labels, scores = [], []
    for features, label in data:
        scores.append(model(features, training=False).numpy())
        labels.append(label.numpy().reshape(-1))
    y = np.concatenate(labels) if labels else np.array([])
    p = np.concatenate(scores) if scores else np.array([])
    task = F.TASK
    metric = OBJECTIVE[task][0]
    value = None
    if task == "binary" and len(set(y.tolist())) == 2:
        value = float(roc_auc_score(y, p.reshape(-1)))
    elif task == "multiclass" and len(y):
        value = float(np.mean(p.argmax(axis=1) == y))
    elif task == "regression" and len(y):
        value = float(np.sqrt(np.mean((p.reshape(-1) - y) ** 2)))
    out = {"share": share, "rows": int(len(y)), "metric": metric, "value": value}
    if task == "binary":
        out["auc"] = value
    return out


def holdout_batches(train_files: list[str], tf_transform_output: tft.TFTransformOutput,
                    share: float, raw: bool | None) -> tf.data.Dataset:
    """(features, label) of the held-out rows, read a file's batch at a time and masked by
    batch, in batches of varying size: one pass to score, so no cache, shuffle or per-record
    step (filtering record by record took 30 s a million rows; this reads them in 6)."""
    files = [f for pattern in train_files for f in sorted(tf.io.gfile.glob(pattern))]
    if not files:
        raise FileNotFoundError(f"no examples match {train_files}")
    transformed = transformed_parser(
        tf_transform_output, examples_are_raw(files) if raw is None else raw)
    keep = _holdout_filter(share, "holdout")

    def parse(serialized):
        parsed = transformed(serialized)
        return {k: parsed[k] for k in model_input_names()}, parsed[F.LABEL_XF]

    return (record_batches(files, 8192)
            .map(lambda records: tf.boolean_mask(records, keep(records)))
            .filter(lambda records: tf.size(records) > 0)
            .map(parse, num_parallel_calls=2)
            .prefetch(2))


def record_batches(files: list[str], size: int) -> tf.data.Dataset:
    """The serialized records of gzipped TFRecord files in batches of up to `size`, two files
    read at once: for one pass over many rows, where a step per record costs tens of
    seconds a million rows."""
    return tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP").batch(size),
        cycle_length=2, num_parallel_calls=2)


def transformed_parser(tf_transform_output: tft.TFTransformOutput,
                       raw: bool) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """serialized tf.Examples -> the transformed features and label. Transform's written
    rows are only parsed; raw rows are parsed with the schema's spec and transformed by the
    graph that is exported inside the model."""
    if not raw:
        spec = tf_transform_output.transformed_feature_spec()
        return lambda serialized: tf.io.parse_example(serialized, spec)
    spec = tf_transform_output.raw_feature_spec()
    layer = tf_transform_output.transform_features_layer()
    return lambda serialized: layer(tf.io.parse_example(serialized, spec))


def examples_are_raw(files: list[str]) -> bool:
    """Whether these are rows as ExampleGen wrote them, not Transform's output: Transform's
    rows always carry the transformed label, which no raw row has."""
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(1):
        return F.LABEL_XF not in tf.train.Example.FromString(record.numpy()).features.feature
    raise ValueError(f"no examples in {len(files)} file(s), e.g. {files[0]}")


# ---------------------------------------------------------------- model


def model_input_names() -> list[str]:
    names = [f.transformed for f in F.FEATURES]
    names += [f.bucket_name for f in F.by_kind(F.Kind.GEO)]
    return names


def build_model(hp: dict[str, Any], extra: tuple[F.Feature, ...] = ()) -> tf.keras.Model:
    """Embeddings for categorical and bucketed features, a ReLU MLP, a sigmoid output.
    `extra` features are inputs beside the spec's (the ablation's noise probe)."""
    inputs: dict[str, tf.keras.Input] = {}
    parts = []
    for feature in (*F.FEATURES, *extra):
        if feature.categorical:
            inputs[feature.transformed] = tf.keras.Input((), name=feature.transformed,
                                                         dtype=tf.int64)
            parts.append(_embed(inputs[feature.transformed], feature, hp))
        else:
            inputs[feature.transformed] = tf.keras.Input((), name=feature.transformed,
                                                         dtype=tf.float32)
            parts.append(tf.keras.layers.Reshape((1,))(inputs[feature.transformed]))
        if feature.kind is F.Kind.GEO:
            inputs[feature.bucket_name] = tf.keras.Input((), name=feature.bucket_name,
                                                         dtype=tf.int64)
            parts.append(_embed(inputs[feature.bucket_name], feature, hp))
    x = tf.keras.layers.Concatenate()(parts)
    for units in _units(hp["hidden_units"]):
        x = tf.keras.layers.Dense(units, activation="relu",
                                  kernel_regularizer=_l2(hp))(x)
        if hp["dropout"]:
            x = tf.keras.layers.Dropout(hp["dropout"])(x)
    problem = F.PROBLEM
    name = problem.name.replace("-", "_")
    if problem.task == "multiclass":
        logits = tf.keras.layers.Dense(problem.num_classes)(x)
        output = tf.keras.layers.Activation("softmax")(logits)
        loss = tf.keras.losses.sparse_categorical_crossentropy  # per example already
        metrics = [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    elif problem.task == "regression":
        output = tf.keras.layers.Reshape(())(tf.keras.layers.Dense(1)(x))
        loss = per_example_squared_error
        metrics = [tf.keras.metrics.RootMeanSquaredError(name="rmse"),
                   tf.keras.metrics.MeanAbsoluteError(name="mae")]
    else:
        logit = tf.keras.layers.Dense(1)(x)
        output = tf.keras.layers.Activation("sigmoid")(tf.keras.layers.Reshape(())(logit))
        loss = per_example_crossentropy
        metrics = [tf.keras.metrics.AUC(name="auc"),
                   tf.keras.metrics.BinaryAccuracy(name="accuracy")]
    model = tf.keras.Model(inputs, output, name=name)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=hp["learning_rate"]),
                  loss=loss, metrics=metrics)
    return model


def per_example_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy per example ([batch]), so sample weights can weigh examples.

    Keras' BinaryCrossentropy averages over the last axis, which for our [batch] outputs is
    the batch itself: one scalar, with nothing left for per-example weights to act on.
    """
    y_true = tf.cast(tf.reshape(y_true, [-1, 1]), y_pred.dtype)
    return tf.keras.losses.binary_crossentropy(y_true, tf.reshape(y_pred, [-1, 1]))


def per_example_squared_error(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Squared error per example ([batch]): a regression's loss, weighable per example."""
    return tf.square(tf.cast(tf.reshape(y_true, [-1]), y_pred.dtype) - tf.reshape(y_pred, [-1]))


def _units(spec: str | list[int]) -> list[int]:
    if isinstance(spec, str):
        return [int(u) for u in spec.split(",") if u.strip()]
    return list(spec)


def _embed(x, feature: F.Feature, hp: dict[str, Any]):
    dim = max(1, round(feature.embedding_dim * hp["embedding_scale"]))
    return tf.keras.layers.Embedding(feature.cardinality, dim, embeddings_regularizer=_l2(hp),
                                     name=f"{x.name}_embedding")(x)


def _l2(hp: dict[str, Any]):
    return tf.keras.regularizers.L2(hp["l2"]) if hp["l2"] else None


# ---------------------------------------------------------------- signatures


def raw_serving_inputs() -> dict[str, tf.TensorSpec]:
    """One [batch] tensor per raw feature: strings ('' = absent), numbers float64 (NaN = absent).

    Numbers are float64 so one JSON number type serves int and float columns alike and NaN
    can say "absent" for optional ones; ids up to 2**53 (census tracts) stay exact.
    """
    return {
        f.name: tf.TensorSpec([None], tf.string if f.dtype == "string" else tf.float64, f.name)
        for f in F.SERVING_FEATURES
    }


def raw_instance(row: dict[str, Any]) -> dict[str, Any]:
    """One raw row -> the values `serving_default` takes for it (a REST `instance`), by the
    raw-row contract (models/contract.py); a row it refuses raises ContractError."""
    return contract.instance(row)


def raw_inputs(rows: list[dict[str, Any]]) -> dict[str, tf.Tensor]:
    """Rows of raw values -> the tensors `serving_default` takes (see raw_instance)."""
    return instance_tensors([raw_instance(row) for row in rows])


def instance_tensors(instances: list[dict[str, Any]]) -> dict[str, tf.Tensor]:
    """Instances the contract produced -> one tensor per serving feature."""
    return {f.name: tf.constant([i[f.name] for i in instances],
                                tf.string if f.dtype == "string" else tf.float64)
            for f in F.SERVING_FEATURES}


def raw_to_parsed(raw: dict[str, tf.Tensor], spec: dict) -> dict[str, tf.Tensor | tf.SparseTensor]:
    """Raw request tensors -> the structure tf.io.parse_example gives for `spec`."""
    parsed = {}
    for name, value in raw.items():
        feature_spec = spec[name]
        present = tf.not_equal(value, "") if value.dtype == tf.string else \
            tf.logical_not(tf.math.is_nan(value))  # NaN marks an absent number
        if value.dtype != tf.string:
            # Absent values are never read, but NaN must not flow on: TFLite's converter
            # folds the sparse round trip below into arithmetic where NaN * 0 is NaN.
            value = tf.where(present, value, tf.zeros_like(value))
        if feature_spec.dtype != value.dtype:
            value = tf.cast(value, feature_spec.dtype)
        if isinstance(feature_spec, tf.io.FixedLenFeature):
            parsed[name] = tf.reshape(value, [-1, 1])
            continue
        rows = tf.where(present)
        parsed[name] = tf.SparseTensor(
            indices=tf.concat([rows, tf.zeros_like(rows)], axis=1),
            values=tf.gather_nd(value, rows),
            dense_shape=tf.stack([tf.shape(value, out_type=tf.int64)[0], tf.constant(1, tf.int64)]),
        )
    return parsed


def guard_raw(raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The raw-row contract's presence and finiteness rules inside the graph: TF Serving's
    clients reach the model without models/contract.py. A required value that is absent
    ("" or NaN), an infinite number, or one that overflows float32 fails the request with a
    message naming the feature (CheckNumerics), instead of being imputed or scored as NaN."""
    required = set(contract.required())
    guarded = {}
    for name, value in raw.items():
        if value.dtype == tf.string:
            if name not in required:
                guarded[name] = value
                continue
            flag = tf.where(tf.equal(value, ""), tf.constant(math.nan, tf.float32), 0.0)
            check = tf.debugging.check_numerics(flag, f"{name} is required, got an empty string")
        else:
            as_float32 = tf.cast(value, tf.float32)  # what the graph computes in: 1e308 -> inf
            if name in required:
                check = tf.debugging.check_numerics(
                    as_float32, f"{name} is required and must be a finite 32-bit float "
                                "(NaN means absent)")
            else:
                check = tf.debugging.check_numerics(
                    tf.where(tf.math.is_nan(value), tf.zeros_like(as_float32), as_float32),
                    f"{name} must be a finite 32-bit float (NaN means absent)")
        with tf.control_dependencies([check]):
            guarded[name] = tf.identity(value)
    return guarded


class _ExportModule(tf.Module):
    """Holds the model and the Transform layer so both are tracked in the SavedModel."""

    def __init__(self, model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput):
        super().__init__()
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._serving_spec = F.raw_feature_spec("SERVING")
        self._training_spec = tf_transform_output.raw_feature_spec()
        self._input_names = model_input_names()
        self._task = F.TASK
        self._log_label = F.PROBLEM.label.log
        self._classes = list(F.PROBLEM.label.classes) if self._task == "multiclass" else []

    def _predict(self, parsed) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer(parsed)
        features = {k: transformed[k] for k in self._input_names}
        answer = self.model(features, training=False)
        if self._task == "regression" and self._log_label:  # back in the label's units
            answer = tf.math.expm1(answer)
        # Never answer a non-finite value (TF Serving would return it as NaN).
        outputs = {output_key(self._task): tf.debugging.check_numerics(
            answer, f"the model produced a non-finite {output_key(self._task)}")}
        if self._classes:  # each row's class names beside its probabilities, in their order
            outputs[CLASSES] = tf.tile(tf.constant([self._classes]), [tf.shape(answer)[0], 1])
        return outputs

    def signatures(self) -> dict[str, Any]:
        @tf.function(input_signature=[raw_serving_inputs()])
        def serve_raw(raw):
            return self._predict(raw_to_parsed(guard_raw(raw), self._serving_spec))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        def serve_examples(examples):
            return self._predict(tf.io.parse_example(examples, self._serving_spec))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        def transform_features(examples):
            return self.tft_layer(tf.io.parse_example(examples, self._training_spec))

        return {
            "serving_default": serve_raw.get_concrete_function(),
            "serving_examples": serve_examples.get_concrete_function(),
            "transform_features": transform_features.get_concrete_function(),
        }


def export(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput, path: str) -> None:
    """The SavedModel with its signatures, without Keras's per-layer call traces.

    Every reader goes through the signatures (serving, TFMA, SafeToServe, TFLite) and warm
    start reads the variables, so the traces were never used: saving them took a good part
    of the export's time and files (benchmarks/README.md).
    """
    module = _ExportModule(model, tf_transform_output)
    signatures = module.signatures()
    with _without_keras_traces():
        tf.saved_model.save(module, path, signatures=signatures)
    P.save_to_model(F.PROBLEM, path)  # the problem travels with the model


def _without_keras_traces() -> contextlib.AbstractContextManager:
    """Keras 2's own `save_traces=False`, which tf.saved_model.save does not take."""
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # another Keras 2 layout: save as Keras does by default
        log.warning("Keras's save-traces option not found: exporting with layer traces")
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False)


# ---------------------------------------------------------------- training


def _hparams_from(fn_args) -> dict[str, Any]:
    custom = dict(fn_args.custom_config or {})
    hp = hparams(custom.get("hparams"))
    if fn_args.hyperparameters:  # the Tuner's best, which win over the configured ones
        values = fn_args.hyperparameters.get("values", fn_args.hyperparameters)
        hp.update({k: v for k, v in values.items() if k in DEFAULT_HPARAMS})
    return hp


def fit(hp: dict[str, Any], tf_transform_output: tft.TFTransformOutput, train_files: list[str],
        eval_files: list[str], steps: int, eval_steps: int, rounds: int,
        seed: int | None = None, callbacks: list | None = None, verbose: int = 2,
        train_weights: list[float] | None = None, base_model: str | None = None,
        distribution: D.Distribution | None = None, raw_examples: bool | None = None,
        holdout: float = 0.0, backup: str = "", backup_every_steps: int = 0,
        backup_every_seconds: float = 0.0):
    """Builds and trains the model in `rounds` epochs, validating after each: the one training
    loop the Trainer and every tuner trial share. `base_model` (a SavedModel this module
    exported) warm-starts it. `raw_examples`: see input_fn's `raw`. Under `distribution`
    (models/distribution.py) the model is built in the strategy's scope and `batch_size` is
    the global batch. `holdout`: that share of the training rows is not trained on (see
    holdout_auc). With `backup`, the training state is backed up there every
    `backup_every_steps` steps (or seconds) and restored from it on a restart
    (models/fault_tolerance.py). Returns (model, history)."""
    strategy = distribution.strategy if distribution else tf.distribute.get_strategy()
    train = input_fn(train_files, tf_transform_output, hp["batch_size"], seed=seed,
                     weights=train_weights, raw=raw_examples, holdout=holdout)
    evaluation = input_fn(eval_files, tf_transform_output, hp["batch_size"],
                          shuffle=False, repeat=True, raw=raw_examples)
    if distribution and distribution.name != "none":
        train, evaluation = _shard_by_data(train), _shard_by_data(evaluation)
    with strategy.scope():
        model = build_model(hp)
        if base_model:
            try:
                warm_start(model, base_model, tf_transform_output)
            except ValueError as e:  # e.g. the tuner chose other layer sizes: start cold
                log.warning("warm start skipped, training from scratch: %s", e)
                model = build_model(hp)
    rounds = max(1, min(rounds, steps))
    callbacks = list(callbacks or [])
    clustered = bool(distribution and distribution.name in ("multi_worker", "parameter_server"))
    saver = None
    if backup:  # first: it restores the state before any other callback sees it
        processes = sum(len((distribution.tf_config.get("cluster") or {}).get(kind, []))
                        for kind in ("chief", "worker")) if clustered and \
            distribution.name == "multi_worker" else 1
        saver = fault_tolerance.callback(backup, strategy, backup_every_steps,
                                         backup_every_seconds, processes)
        callbacks.insert(0, saver)
    if distribution and distribution.watchdog:  # the first step proves every peer is there
        callbacks.append(tf.keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda *_: distribution.watchdog.disarm()))
    try:
        history = model.fit(
            train,
            epochs=rounds,
            steps_per_epoch=math.ceil(steps / rounds),
            validation_data=evaluation,
            validation_steps=max(1, eval_steps or 1),
            callbacks=callbacks,
            verbose=verbose,
        )
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
        if not clustered:
            raise
        raise fault_tolerance.peer_lost(e, distribution.name, saver) from e
    return model, history


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker reads every file and keeps its share of the batches: correct however
    few files Transform wrote (FILE sharding would leave a worker without input)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# ---------------------------------------------------------------- warm start


def _vocabulary(path: str) -> list[str]:
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line in f]


def warm_start(model: tf.keras.Model, base_model: str,
               tf_transform_output: tft.TFTransformOutput) -> dict[str, int]:
    """Loads the weights of `base_model` (a SavedModel from `export`) into `model`.

    Vocabulary indices move between windows (a new top company, a dropped census tract), so
    each vocabulary embedding is remapped token by token: a token both vocabularies hold keeps
    its learned row, a new token keeps its fresh initialisation, OOV buckets keep theirs
    (they sit right after the vocabulary, so they move when its length changes).
    Returns, per vocabulary feature, how many rows were carried over. A base model of another
    shape (changed hyperparameters) raises ValueError: the caller decides whether to go cold.
    """
    vocab_layers = {f.name: model.get_layer(f"{f.transformed}_embedding")
                    for f in F.by_kind(F.Kind.VOCAB)}
    fresh = {name: layer.get_weights()[0] for name, layer in vocab_layers.items()}
    checkpoint = tf.train.Checkpoint(model=model)
    try:  # the optimizer and metrics of the base model are not wanted: expect_partial
        checkpoint.read(os.path.join(base_model, "variables", "variables")) \
            .expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise ValueError(f"{base_model} does not match this model's architecture: {e}") from e
    carried = {}
    for feature in F.by_kind(F.Kind.VOCAB):
        layer = vocab_layers[feature.name]
        old = layer.get_weights()[0]
        old_vocab = _vocabulary(os.path.join(base_model, "assets", feature.name))
        old_vocab = old_vocab[:feature.top_k]
        old_index = {token: i for i, token in enumerate(old_vocab)}
        new_vocab = _vocabulary(tf_transform_output.vocabulary_file_by_name(feature.name))
        new_vocab = new_vocab[:feature.top_k]
        rows = fresh[feature.name].copy()
        # OOV hash buckets follow the vocabulary (index len(vocab) + bucket): same hash, same row.
        rows[len(new_vocab):len(new_vocab) + feature.oov] = \
            old[len(old_vocab):len(old_vocab) + feature.oov]
        carried[feature.name] = 0
        for i, token in enumerate(new_vocab):
            if token in old_index:
                rows[i] = old[old_index[token]]
                carried[feature.name] += 1
        layer.set_weights([rows])
    log.info("warm start from %s; vocabulary rows carried over: %s", base_model, carried)
    return carried


def run_fn(fn_args) -> None:
    """Trainer entry point: fit on the train splits, export with the Transform graph.

    Under a multi-worker strategy every replica runs this: all train and all take part in
    the export (saving is collective), but only the chief writes the Trainer's outputs;
    the others save to a scratch directory they delete, then wait (bounded) for the
    chief's model, which TFX checks for on every replica."""
    custom = dict(fn_args.custom_config or {})
    problem = P.from_custom_config(custom)  # the problem this Trainer was handed, with the
    # schema as this Trainer received it where its own folder is not here (a job's machine)
    if fn_args.schema_path and not tf.io.gfile.exists(problem.schema_file):
        P.activate(dataclasses.replace(problem, schema_path=fn_args.schema_path))
    hp = _hparams_from(fn_args)
    distribution = D.choose(custom.get("distribution") or "auto")
    if distribution.serves_only:
        D.serve(distribution)  # returns only when the job stops it
        return
    raw_examples = bool(custom.get("raw_examples"))
    holdout = float(custom.get("in_time_holdout") or 0.0)
    steps, refit = fn_args.train_steps, None
    if custom.get("refit"):  # the blessed recipe on every row: same steps per row
        steps, refit = refit_steps(fn_args.train_files, fn_args.train_steps)
        holdout = 0.0  # the newest rows are the point: none held out
        log.info("refit: %d rows (%d of them the evaluation's), %d steps", refit["rows"]["all"],
                 refit["rows"]["added"], steps)
    seed = custom.get("seed")
    if seed is not None:
        tf.keras.utils.set_random_seed(int(seed))
    log.info("hyperparameters: %s (global batch %d = %d replica(s) x %s)", json.dumps(hp),
             hp["batch_size"], distribution.replicas,
             round(hp["batch_size"] / distribution.replicas, 2))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    # One file pattern per span of the window, newest first (SpanWindow's train_0, train_1..).
    half_life = float(custom.get("recency_half_life") or 0)
    weights = recency_weights(len(fn_args.train_files), half_life)[::-1] if half_life else None
    if weights:
        log.info("recency weights (newest span first): %s", [round(w, 3) for w in weights])
    chief = distribution.is_chief
    run_dir = fn_args.model_run_dir if chief else _scratch(fn_args.model_run_dir, distribution)
    # On Kubeflow the base model is ServedModel's output, empty before the first push.
    base_model = fn_args.base_model if fn_args.base_model and tf.io.gfile.exists(
        os.path.join(fn_args.base_model, "saved_model.pb")) else None
    backup = _backup_dir(fn_args, custom, hp, base_model, distribution)
    every_steps = int(custom.get("backup_every_steps") or 0)
    every_seconds = float(custom.get("backup_every_seconds") or 0)
    started = time.monotonic()
    model, history = fit(
        hp, tf_transform_output, fn_args.train_files, fn_args.eval_files,
        steps=steps, eval_steps=fn_args.eval_steps,
        rounds=int(custom.get("eval_rounds", 10)), seed=seed,
        callbacks=[tf.keras.callbacks.TensorBoard(log_dir=run_dir, update_freq="epoch"),
                   progress.for_strategy(distribution.strategy)],
        train_weights=weights, base_model=base_model, distribution=distribution,
        raw_examples=raw_examples, holdout=holdout, backup=backup,
        backup_every_steps=every_steps, backup_every_seconds=every_seconds)
    steps_per_round = history.params["steps"]
    train_seconds = time.monotonic() - started
    steps_done = int(model.optimizer.iterations.numpy())
    resumed = getattr(model, fault_tolerance.RESUMED, 0)
    log.info("trained %d steps in %.1f s%s", steps_done - resumed, train_seconds,
             f" (to step {steps_done}, resumed from {resumed})" if resumed else "")
    in_time = holdout_auc(model, tf_transform_output, fn_args.train_files, holdout,
                          raw_examples) if holdout and chief else None
    if in_time:
        log.info("in-time holdout (%.0f%% of the training period, %d rows): %s %s",
                 100 * holdout, in_time["rows"], in_time["metric"], in_time["value"])
    if chief:
        os.makedirs(fn_args.model_run_dir, exist_ok=True)
        with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
            json.dump({"hparams": hp, "steps_per_round": steps_per_round,
                       "train_seconds": round(train_seconds, 2),
                       "warm_start": base_model, "recency_weights": weights,
                       "in_time_holdout": in_time,
                       "steps": steps_done, "resumed_from_step": resumed,
                       "contamination_marks": _trained_under(custom),
                       "refit": refit,
                       "distribution": {"strategy": distribution.name,
                                        "replicas": distribution.replicas,
                                        "reason": distribution.reason},
                       "history": {k: [float(v) for v in vs]
                                   for k, vs in history.history.items()}}, f)
    started = time.monotonic()
    target = fn_args.serving_model_dir if chief else \
        _scratch(fn_args.serving_model_dir, distribution)
    export(model, tf_transform_output, target)
    if not chief:
        tf.io.gfile.rmtree(target)
        tf.io.gfile.rmtree(run_dir)
        _wait_for_chief_export(fn_args.serving_model_dir)
        return
    log.info("exported serving signatures to %s in %.1f s", fn_args.serving_model_dir,
             time.monotonic() - started)
    if backup:
        fault_tolerance.clear(backup)


def refit_steps(train_files: list[str], recipe_steps: int) -> tuple[int, dict[str, Any]]:
    """The refit's steps: the evaluated candidate's steps per row, over every row. Its first
    file pattern is the evaluation split it adds (newest first, as the spans are)."""
    def rows(pattern: str) -> int:
        files = tf.io.gfile.glob(pattern)
        if not files:
            return 0
        # A reduce over single records took 36 s a million rows; over batches, 1.4 s.
        return int(record_batches(files, 4096).reduce(np.int64(0), lambda n, batch: n + tf.cast(
            tf.shape(batch)[0], tf.int64)).numpy())

    counts = [rows(p) for p in train_files]
    recipe, every = sum(counts[1:]), sum(counts)
    steps = max(1, round(recipe_steps * every / recipe)) if recipe else recipe_steps
    return steps, {"rows": {"recipe": recipe, "added": counts[0], "all": every},
                   "recipe_steps": recipe_steps, "steps": steps,
                   "steps_per_row": round(recipe_steps / recipe, 6) if recipe else None}


def _backup_dir(fn_args, custom: dict[str, Any], hp: dict[str, Any], base_model: str | None,
                distribution: D.Distribution) -> str:
    """Where this training's state is backed up (custom_config backup_root; none if unset):
    the same folder for the same training, restarted, whichever run's outputs it writes."""
    if not custom.get("backup_root"):
        return ""
    cluster = distribution.tf_config.get("cluster") or {}
    folder = fault_tolerance.backup_dir(custom["backup_root"], {
        "train": fn_args.train_files, "eval": fn_args.eval_files,
        "transform": fn_args.transform_output, "hparams": hp, "steps": fn_args.train_steps,
        "seed": custom.get("seed"), "base_model": base_model,
        "holdout": custom.get("in_time_holdout"), "weights": custom.get("recency_half_life"),
        "strategy": distribution.name,
        "cluster": {kind: len(tasks) for kind, tasks in cluster.items()}})
    every = custom.get("backup_every_steps") or 0
    log.info("training state backed up %s under %s", f"every {every} steps" if every else
             f"every {custom.get('backup_every_seconds')} s"
             if custom.get("backup_every_seconds") else "every round", folder)
    return folder


def _trained_under(custom: dict[str, Any]) -> dict[str, str]:
    """The contamination marks the training rows were cleaned of (control/marks.py): those
    the pipeline was built with and those in the control folder now."""
    from control import marks

    found = {m.id: m for m in marks.from_json(custom.get("marks") or "[]")}
    if custom.get("control_dir"):
        found.update({m.id: m for m in marks.active(custom["control_dir"])})
    return {mark_id: mark.describe() for mark_id, mark in found.items()}


def _scratch(path: str, distribution: D.Distribution) -> str:
    return f"{path.rstrip('/')}-scratch-{distribution.task_type}-{distribution.task_index}"


def _wait_for_chief_export(serving_model_dir: str) -> None:
    timeout = D.peer_timeout()
    deadline = time.monotonic() + timeout
    marker = os.path.join(serving_model_dir, "saved_model.pb")
    while not tf.io.gfile.exists(marker):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the chief's model did not appear at {serving_model_dir} "
                               f"within {timeout:.0f} s ({D.PEER_TIMEOUT_ENV})")
        time.sleep(1.0)
    log.info("non-chief replica done; the chief exported %s", serving_model_dir)
