"""AnomalyGate: stops the run when ExampleValidator found anomalies.

In TFX 1.16 ExampleValidator only records anomalies; Transform and Trainer run anyway.
This component reads what it recorded and fails, naming every feature and anomaly, so
the pipeline stops before Transform (which is wired to run after it) and nothing is pushed.
"""


import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputDict
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts

ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes in each split directory


class DataValidationError(RuntimeError):
    """Raised by the gate; its message lists split, feature and anomaly for each problem."""


def read_anomalies(artifact_uri: str, split_names: str) -> dict[str, anomalies_pb2.Anomalies]:
    result = {}
    for split in artifact_utils.decode_split_names(split_names):
        path = os.path.join(artifact_uri, f"Split-{split}", ANOMALIES_FILE)
        anomalies = anomalies_pb2.Anomalies()
        with fileio.open(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        result[split] = anomalies
    return result


def describe(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per (split, feature) anomaly, readable without TFDV."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            details = "; ".join(r.description or r.short_description for r in info.reason)
            lines.append(f"split '{split}': feature '{feature}': {info.short_description}"
                         f" ({details})")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"split '{split}': dataset: {info.short_description}")
    return lines


@component
def AnomalyGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
) -> OutputDict(anomaly_count=int):
    problems = describe(read_anomalies(anomalies.uri, anomalies.split_names))
    if problems:
        raise DataValidationError(
            f"data validation found {len(problems)} anomal{'y' if len(problems) == 1 else 'ies'}"
            " against schema/schema.pbtxt; stopping before Transform:\n  - "
            + "\n  - ".join(problems)
            + "\nFix the data, or if the change is intended, update schema/schema.pbtxt "
            "(review it like code) and run again."
        )
    return {"anomaly_count": 0}
