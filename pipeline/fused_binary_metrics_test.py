"""The one-pass metrics give TFMA's own values, under TFMA's own keys, through real TFMA.

Both evaluations run TFMA end to end on the same examples (predictions stored with them, as
TFMA's model-agnostic evaluation reads them): two models, one of them the baseline, example
weights, slices, predictions exactly at the threshold, fractional labels, and a slice with no
positive label (NaN precision, recall and calibration).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import metrics_for_slice_pb2

from pipeline import fused_binary_metrics
from pipeline.fused_binary_metrics import NAMES, FusedBinaryMetrics

TFMA_CLASSES = ("AUC", "AUCPrecisionRecall", "CalibrationPlot", "BinaryAccuracy", "Precision",
                "Recall", "Calibration", "MeanLabel", "MeanPrediction")


def write_examples(path: Path, rows: int = 600, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(rows):
            group = ("a", "b", "c", "negatives")[i % 4]
            label = 0.0 if group == "negatives" else float(rng.random() < 0.3)
            if i % 37 == 0 and group != "negatives":
                label = 0.25  # a fractional label
            candidate, baseline = rng.random(2)
            if i % 11 == 0:
                candidate = 0.5  # exactly at the threshold: TFMA calls it negative
            feature = {
                "label": [label], "candidate": [float(candidate)],
                "baseline": [float(baseline)],
                "weight": [0.0 if i % 13 == 0 else float(rng.integers(1, 4))],
            }
            example = tf.train.Example(features=tf.train.Features(feature={
                **{k: tf.train.Feature(float_list=tf.train.FloatList(value=v))
                   for k, v in feature.items()},
                "group": tf.train.Feature(bytes_list=tf.train.BytesList(value=[group.encode()])),
            }))
            writer.write(example.SerializeToString())


def eval_config(metrics: list[tfma.MetricConfig], min_auc: float = 0.0) -> tfma.EvalConfig:
    """The AUC floor on the overall slice, on the config of the metric that computes AUC, as
    pipeline.eval_config sets it."""
    auc_floor = tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()], threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_auc})))
    metrics = [tfma.MetricConfig(class_name=m.class_name, module=m.module,
                                 per_slice_thresholds=[auc_floor])
               if m.class_name in ("AUC", "FusedBinaryMetrics") else m for m in metrics]
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(name="candidate", label_key="label", prediction_key="candidate",
                           example_weight_key="weight"),
            tfma.ModelSpec(name="baseline", label_key="label", prediction_key="baseline",
                           example_weight_key="weight", is_baseline=True),
        ],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["group"])],
        metrics_specs=[tfma.MetricsSpec(
            metrics=metrics,
            example_weights=tfma.ExampleWeightOptions(weighted=True, unweighted=True))],
    )


def evaluate(data: Path, out: Path, metrics: list[tfma.MetricConfig],
             min_auc: float = 0.0) -> tuple[dict, dict, bool]:
    """{(slice, metric key): value} and {(slice, plot key): plot} as TFMA writes them, and
    whether the candidate passed the AUC floor."""
    tfma.run_model_analysis(eval_config=eval_config(metrics, min_auc),
                            data_location=str(data), output_path=str(out))
    values, plots = {}, {}
    for per_slice in tfma.load_metrics(str(out)):
        slice_key = per_slice.slice_key.SerializeToString(deterministic=True)
        for item in per_slice.metric_keys_and_values:
            key = item.key.SerializeToString(deterministic=True)
            values[(slice_key, key)] = item.value.double_value.value
    for per_slice in tfma.load_plots(str(out)):
        slice_key = per_slice.slice_key.SerializeToString(deterministic=True)
        for item in per_slice.plot_keys_and_values:
            plots[(slice_key, item.key.SerializeToString(deterministic=True))] = item.value
    return values, plots, tfma.load_validation_result(str(out)).validation_ok


FUSED = [tfma.MetricConfig(class_name="FusedBinaryMetrics", module=fused_binary_metrics.__name__)]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fused") / "examples.tfrecord"
    write_examples(path)
    return path


@pytest.fixture(scope="module")
def both(examples) -> tuple[tuple, tuple]:
    tfma_own = evaluate(examples, examples.parent / "tfma",
                        [tfma.MetricConfig(class_name=c) for c in TFMA_CLASSES])
    return tfma_own, evaluate(examples, examples.parent / "fused", FUSED)


def test_same_keys_and_values_as_tfma_metrics(both):
    (tfma_values, _, _), (fused_values, _, _) = both
    assert set(fused_values) == set(tfma_values)
    names = {metric_types.MetricKey.from_proto(
        metrics_for_slice_pb2.MetricKey.FromString(key)).name for _, key in tfma_values}
    assert names == set(NAMES) - {"calibration_plot"}  # each, and its diff to the baseline
    nans = 0
    for key, expected in tfma_values.items():
        if math.isnan(expected):
            nans += 1
            assert math.isnan(fused_values[key]), key
        else:
            assert fused_values[key] == pytest.approx(expected, rel=1e-12, abs=1e-12), key
    assert nans > 0  # the slice without positives was there to compare
    # 5 slices x 8 metrics x (candidate, baseline, their diff) x (weighted, unweighted)
    assert len(tfma_values) == 5 * 8 * 3 * 2


def test_same_calibration_plots_as_tfma(both):
    (_, tfma_plots, _), (_, fused_plots, _) = both
    assert len(tfma_plots) == 5 * 2 * 2  # slices x models x (weighted, unweighted)
    assert set(fused_plots) == set(tfma_plots)
    for key, plot in tfma_plots.items():
        buckets = plot.calibration_histogram_buckets.buckets
        assert len(buckets) > 100
        fused = fused_plots[key].calibration_histogram_buckets.buckets
        np.testing.assert_allclose(_table(fused), _table(buckets), rtol=1e-12, atol=1e-12)


def _table(buckets) -> np.ndarray:
    return np.array([(b.lower_threshold_inclusive, b.num_weighted_examples.value,
                      b.total_weighted_label.value, b.total_weighted_refined_prediction.value)
                     for b in buckets])


@pytest.mark.parametrize("floor, passes", [(0.4, True), (0.99, False)])
def test_the_auc_floor_judges_the_fused_auc(examples, both, floor, passes, tmp_path):
    (_, _, tfma_ok), (_, _, fused_ok) = both
    assert tfma_ok and fused_ok  # a floor of 0 passes
    _, _, ok = evaluate(examples, tmp_path / "out", FUSED, min_auc=floor)
    assert ok is passes


def test_a_label_outside_zero_one_is_refused_by_value():
    metric = FusedBinaryMetrics()
    computation = metric.computations(eval_config=tfma.EvalConfig(),
                                      example_weighted=False)[0]
    inputs = metric_util.to_standard_metric_inputs({
        "labels": np.array([2.0]), "predictions": np.array([0.9]),
        "example_weights": np.array([1.0])})
    with pytest.raises(ValueError, match=r"label must be within \[0, 1\]: label=\[2\.\]"):
        computation.combiner.add_input(computation.combiner.create_accumulator(), inputs)


def test_each_example_is_unpacked_once_for_all_its_slices(examples, tmp_path, monkeypatch):
    calls = []
    unpack = metric_util.to_label_prediction_example_weight

    def counted(*args, **kwargs):
        calls.append(kwargs["model_name"])
        return unpack(*args, **kwargs)

    monkeypatch.setattr(metric_util, "to_label_prediction_example_weight", counted)
    evaluate(examples, tmp_path / "out", FUSED)
    # 600 examples x 2 models x (weighted, unweighted), each in 2 slices (overall, group)
    assert len(calls) == 600 * 2 * 2
