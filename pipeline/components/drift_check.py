"""DriftCheck: this run's statistics against the data behind the last blessed model (or,
before any model is blessed, the previous span's), with TFDV's drift comparators.

The thresholds are the `drift_comparator` of each feature in schema/schema.pbtxt (L-infinity
for categorical features, Jensen-Shannon divergence for numbers), reviewed like the rest of
the schema. The check records every distance, breached or not, in `drift.json` (plus TFDV's
Anomalies proto); AnomalyGate decides whether a breach stops the run, and the run report
shows the distances.

The baseline is the training data of the model in service, because that is what the new data
must not drift from: the statistics of the run that trained the last blessed model (the
newest statistics recorded before that model; with a span layout, its newest span). A span
that was stopped for drift is never the baseline of the next one. Before any model is
blessed, a span layout compares with the previous span; otherwise there is nothing to compare
and the artifact says so. On Vertex the previous span's statistics come from the span catalog
(`catalog`), to which the check adds this span's; there (no history) the previous span is
the baseline.
"""

import json
import os

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from pipeline.components import span_catalog
from reporting.artifacts import ANOMALIES_FILE, DRIFT_FILE

COMPARATORS = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon",
    anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE: "normalized abs diff",
}


def distances(anomalies: anomalies_pb2.Anomalies, skew: bool = False) -> list[dict]:
    """Every compared feature with its distance and threshold, most breached first."""
    rows = []
    for info in anomalies.drift_skew_info:
        for m in (info.skew_measurements if skew else info.drift_measurements):
            rows.append({"feature": ".".join(info.path.step),
                         "comparator": COMPARATORS.get(m.type, str(m.type)),
                         "distance": round(float(m.value), 4),
                         "threshold": float(m.threshold),
                         "breached": bool(m.value > m.threshold)})
    return sorted(rows, key=lambda r: (-r["breached"], -r["distance"] / (r["threshold"] or 1),
                                       r["feature"]))


def compare(current: statistics_pb2.DatasetFeatureStatisticsList,
            previous: statistics_pb2.DatasetFeatureStatisticsList,
            schema) -> tuple[anomalies_pb2.Anomalies, list[dict]]:
    anomalies = tfdv.validate_statistics(current, schema, previous_statistics=previous)
    return anomalies, distances(anomalies)


def blessed_data(history: list, blessed_model) -> tuple:
    """The statistics of the run that trained `blessed_model`, and how to name them.

    Artifact ids grow as a store records artifacts, and a run records its statistics before
    it trains: the newest statistics older than the model are that run's (a cached
    StatisticsGen hands on the artifact it reused, which describes the same data)."""
    if blessed_model is None or blessed_model.id is None:
        return None, None
    behind = [a for a in history if a.id is not None and a.id < blessed_model.id]
    if not behind:
        return None, None
    chosen = max(behind, key=lambda a: a.id)
    return chosen, (f"span {chosen.span or 0}, the data behind the last blessed model "
                    f"(Model {blessed_model.id})")


def _load(artifact, split: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    return stats_artifact_utils.load_statistics(artifact, split).proto()


@component
def DriftCheck(
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    drift: OutputArtifact[standard_artifacts.ExampleAnomalies],
    history: InputArtifact[list[standard_artifacts.ExampleStatistics]] = None,
    blessed_model: InputArtifact[standard_artifacts.Model] = None,
    split: Parameter[str] = "train",
    catalog: Parameter[str] = "",
) -> None:
    """`history`: StatisticsGen's outputs of every run. (TFX's span resolvers skip statistics
    artifacts: they want a `version` property that ExampleStatistics does not have.)
    `blessed_model`: the latest blessed model, if any."""
    span = int(statistics.span or 0)
    baseline_statistics, baseline = blessed_data(history or [], blessed_model)
    if baseline_statistics is None:
        earlier = [a for a in history or [] if (a.span or 0) < span]
        if catalog:
            earlier += span_catalog.newest_before(catalog, span_catalog.STATISTICS, span, 1,
                                                  standard_artifacts.ExampleStatistics)
        if earlier:
            baseline_statistics = max(earlier, key=lambda a: (a.span, a.id))
            baseline = f"span {baseline_statistics.span or 0}, the previous span"
    if catalog:
        span_catalog.record(catalog, span_catalog.STATISTICS, statistics)
    result = {"span": span, "split": split, "baseline_span": None, "baseline": None,
              "features": [], "breached": []}
    drift.split_names = artifact_utils.encode_split_names([split])
    anomalies = anomalies_pb2.Anomalies()
    current = _load(statistics, split)
    if not current.datasets or current.datasets[0].num_examples == 0:
        baseline_statistics = None  # no rows: nothing to compare; AnomalyGate stops the run
    if baseline_statistics is not None:
        schema_proto = tfdv.load_schema_text(io_utils.get_only_uri_in_dir(schema.uri))
        anomalies, rows = compare(current, _load(baseline_statistics, split), schema_proto)
        result.update(baseline_span=int(baseline_statistics.span or 0), baseline=baseline,
                      features=rows,
                      breached=[r["feature"] for r in rows if r["breached"]])
    split_dir = os.path.join(drift.uri, f"Split-{split}")
    fileio.makedirs(split_dir)
    with fileio.open(os.path.join(split_dir, ANOMALIES_FILE), "wb") as f:
        f.write(anomalies.SerializeToString())
    with fileio.open(os.path.join(drift.uri, DRIFT_FILE), "w") as f:
        json.dump(result, f, indent=2)
    drift.set_int_custom_property("breached", len(result["breached"]))
    drift.set_int_custom_property("baseline_span", -1 if result["baseline_span"] is None
                                  else result["baseline_span"])
