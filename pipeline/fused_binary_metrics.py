"""The Evaluator's binary-classification metrics from one pass over the examples, with TFMA's
names, definitions and values.

TFMA computes AUC, AUC-PR and the calibration plot from a calibration histogram; accuracy,
precision and recall at 0.5 from an exact confusion matrix; calibration, mean label and mean
prediction from weighted sums. Those are three combiners, and each unpacks every example
again (`metric_util.to_label_prediction_example_weight`) once per slice the example falls
in: on the 1M-row run, most of the Evaluator's time (benchmarks/README.md). Here one combiner
unpacks each example once, with TFMA's function, however many slices it falls in, and keeps
all three sets of sums. AUC, AUC-PR and the plot are still TFMA's own derived computations,
fed the same histogram; the rest follow TFMA's definitions. The test compares every value
with TFMA's own metrics, slice by slice, model by model, weighted and not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from tensorflow_model_analysis.metrics import (
    calibration_histogram,
    calibration_plot,
    confusion_matrix_metrics,
    metric_types,
    metric_util,
)
from tensorflow_model_analysis.proto import config_pb2

SUMMED = ("binary_accuracy", "precision", "recall", "calibration", "mean_label",
          "mean_prediction")
FROM_HISTOGRAM = ("auc", "auc_precision_recall", "calibration_plot")
NAMES = SUMMED + FROM_HISTOGRAM
DEFAULT_THRESHOLD = 0.5  # TFMA's default for BinaryAccuracy, Precision and Recall


class FusedBinaryMetrics(metric_types.Metric):
    """auc, auc_precision_recall and calibration_plot (TFMA's, 10,000-bucket histogram);
    binary_accuracy, precision and recall at `threshold`; calibration (sum of predictions
    over sum of labels), mean_label and mean_prediction. Labels in [0, 1].

    TFMA keys the thresholds of a MetricConfig by its metric's name; this one answers to
    `auc`, so the thresholds on its config judge the AUC. (Thresholds keyed by name in the
    MetricsSpec are not an alternative: TFMA 0.47 never finds their metric.)"""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, name: str = "auc"):
        super().__init__(metric_util.merge_per_key_computations(_computations),
                         threshold=threshold, name=name)


def _computations(
    threshold: float = DEFAULT_THRESHOLD,
    name: str = "auc",
    eval_config: config_pb2.EvalConfig | None = None,
    model_name: str = "",
    output_name: str = "",
    sub_key: metric_types.SubKey | None = None,
    aggregation_type: metric_types.AggregationType | None = None,
    class_weights: dict[int, float] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    where = {"model_name": model_name, "output_name": output_name, "sub_key": sub_key,
             "example_weighted": example_weighted}
    keys = {metric: metric_types.MetricKey(name=metric, **where) for metric in SUMMED}
    histogram_key = calibration_histogram.calibration_histogram(
        eval_config=eval_config, aggregation_type=aggregation_type,
        class_weights=class_weights, **where)[-1].keys[-1]
    # TFMA's own AUC, AUC-PR and calibration plot, minus the histogram they would compute.
    derived, read = [], set()
    for metric in (confusion_matrix_metrics.AUC(),
                   confusion_matrix_metrics.AUCPrecisionRecall(),
                   calibration_plot.CalibrationPlot()):
        for computation in metric.computations(
                eval_config=eval_config, model_names=[model_name], output_names=[output_name],
                sub_keys=[sub_key], aggregation_type=aggregation_type,
                class_weights=class_weights, example_weighted=example_weighted):
            if isinstance(computation, metric_types.DerivedMetricComputation):
                derived.append(computation)
            else:
                read.update(computation.keys)
    if read != {histogram_key}:
        raise ValueError(f"TFMA's AUC, AUC-PR and calibration plot read "
                         f"{', '.join(map(str, read))}, not the histogram this metric "
                         f"computes ({histogram_key})")
    combiner = _Combiner(keys, histogram_key, eval_config, threshold, aggregation_type,
                         class_weights, example_weighted)
    return [metric_types.MetricComputation(
        keys=[*keys.values(), histogram_key],
        preprocessors=None,  # TFMA's StandardMetricInputs, shared with its other metrics
        combiner=combiner), *derived]


class _Sums:
    """Weighted confusion counts at the threshold, weighted totals, and the histogram
    (bucket -> [weighted labels, weighted predictions, weighted examples])."""

    __slots__ = ("tp", "tn", "fp", "fn", "labels", "predictions", "examples", "buckets")

    def __init__(self) -> None:
        self.tp = self.tn = self.fp = self.fn = 0.0
        self.labels = self.predictions = self.examples = 0.0
        self.buckets: dict[int, list[float]] = {}


def _ratio(numerator: float, denominator: float) -> float:
    """TFMA's confusion-matrix division: NaN unless the denominator is positive."""
    return numerator / denominator if denominator > 0 else float("nan")


def _mean(numerator: float, denominator: float) -> float:
    """TFMA's calibration division: NaN when the denominator is (close to) zero."""
    return float("nan") if math.isclose(denominator, 0.0, abs_tol=1e-8) \
        else numerator / denominator


class _Combiner(beam.CombineFn):
    NUM_BUCKETS = calibration_histogram.DEFAULT_NUM_BUCKETS  # over predictions in [0, 1]

    def __init__(self, keys: dict[str, metric_types.MetricKey],
                 histogram_key: metric_types.PlotKey,
                 eval_config: config_pb2.EvalConfig | None, threshold: float,
                 aggregation_type: metric_types.AggregationType | None,
                 class_weights: dict[int, float] | None, example_weighted: bool) -> None:
        self._keys = keys
        self._histogram_key = histogram_key
        self._eval_config = eval_config
        self._threshold = threshold
        self._aggregation_type = aggregation_type
        self._class_weights = class_weights
        self._example_weighted = example_weighted
        self._element: metric_types.StandardMetricInputs | None = None
        self._unpacked: list[tuple] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_element": None, "_unpacked": []}

    def _unpack(self, element: metric_types.StandardMetricInputs) -> list[tuple]:
        """(label, prediction, weight, bucket) as TFMA's histogram and confusion matrix see
        them: a label y of weight w is a negative of weight w(1 - y) and a positive of
        weight wy (zero weights dropped); a label outside [0, 1] is an error.

        An example reaches the combiner once per slice it falls in, the same object one
        slice after the other: it is unpacked once."""
        if element is self._element:
            return self._unpacked
        key = self._histogram_key
        unpacked = []
        for label, prediction, weight in metric_util.to_label_prediction_example_weight(
                element, eval_config=self._eval_config, model_name=key.model_name,
                output_name=key.output_name, sub_key=key.sub_key,
                aggregation_type=self._aggregation_type, class_weights=self._class_weights,
                example_weighted=self._example_weighted, fractional_labels=True,
                flatten=True):
            prediction = float(metric_util.safe_to_scalar(prediction))
            unpacked.append((float(metric_util.safe_to_scalar(label)), prediction,
                             float(metric_util.safe_to_scalar(weight)),
                             self._bucket(prediction)))
        self._element, self._unpacked = element, unpacked
        return unpacked

    def create_accumulator(self) -> _Sums:
        return _Sums()

    def _bucket(self, prediction: float) -> int:
        """TFMA's bucket: 0 below 0, NUM_BUCKETS + 1 from 1 up."""
        index = prediction * self.NUM_BUCKETS + 1
        if index < 0:
            return 0
        return self.NUM_BUCKETS + 1 if index >= self.NUM_BUCKETS + 1 else int(index)

    def add_input(self, sums: _Sums, element: metric_types.StandardMetricInputs) -> _Sums:
        for label, prediction, weight, index in self._unpack(element):
            weighted_label, weighted_prediction = label * weight, prediction * weight
            sums.examples += weight
            sums.labels += weighted_label
            sums.predictions += weighted_prediction
            if prediction > self._threshold:
                if label == 1.0:
                    sums.tp += weight
                else:
                    sums.fp += weight
            elif label == 1.0:
                sums.fn += weight
            else:
                sums.tn += weight
            bucket = sums.buckets.get(index)
            if bucket is None:
                sums.buckets[index] = [weighted_label, weighted_prediction, weight]
            else:
                bucket[0] += weighted_label
                bucket[1] += weighted_prediction
                bucket[2] += weight
        return sums

    def merge_accumulators(self, accumulators: Iterable[_Sums]) -> _Sums:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for sums in accumulators:
            result.tp += sums.tp
            result.tn += sums.tn
            result.fp += sums.fp
            result.fn += sums.fn
            result.labels += sums.labels
            result.predictions += sums.predictions
            result.examples += sums.examples
            for index, (labels, predictions, examples) in sums.buckets.items():
                bucket = result.buckets.setdefault(index, [0.0, 0.0, 0.0])
                bucket[0] += labels
                bucket[1] += predictions
                bucket[2] += examples
        return result

    def extract_output(self, sums: _Sums) -> dict[metric_types.MetricKey, Any]:
        values = {
            "binary_accuracy": _ratio(sums.tp + sums.tn,
                                      sums.tp + sums.fp + sums.tn + sums.fn),
            "precision": _ratio(sums.tp, sums.tp + sums.fp),
            "recall": _ratio(sums.tp, sums.tp + sums.fn),
            "calibration": _mean(sums.predictions, sums.labels),
            "mean_label": _mean(sums.labels, sums.examples),
            "mean_prediction": _mean(sums.predictions, sums.examples),
        }
        histogram = [calibration_histogram.Bucket(index, *sums.buckets[index])
                     for index in sorted(sums.buckets)]
        return {**{self._keys[name]: value for name, value in values.items()},
                self._histogram_key: histogram}
