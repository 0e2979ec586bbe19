"""AnomalyGate: stops the run when ExampleValidator found anomalies, DriftCheck a drift or
LeakageCheck train and eval overlapping.

In TFX 1.16 ExampleValidator only records anomalies; Transform and Trainer run anyway.
This component reads what it recorded (and what DriftCheck measured against the data
behind the last blessed model, and what LeakageCheck found between the rows a model trains
and is judged on) and fails, naming every feature, anomaly, distance and overlap, so the
pipeline stops before Transform (which is wired to run after it) and nothing is pushed. With
`drift_action="warn"` a drift breach is logged instead; leakage flags (duplicates, a feature
that predicts the label alone, one absent when serving) are logged and reported, not stopped.
"""


import json
import logging
import os

from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputDict, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts

from reporting.artifacts import (
    DRIFT_FILE,
    LEAKAGE_FILE,
    describe,
    describe_drift,
    read_anomalies,
)

NO_ROWS = "no rows: the input is empty (a header-only or 0-byte file?)"


class DataValidationError(RuntimeError):
    """Raised by the gate; its message lists split, feature and anomaly for each problem."""


def statistics_problems(split: str, stats) -> list[str]:
    """What the statistics show and TFDV's validation does not report: a split without rows
    (TFDV validates nothing then), and strings that are not UTF-8 (a Latin-1 export:
    served JSON can never carry those bytes, so the value would be out of vocabulary in
    production), which TFDV counts but does not flag without a string domain."""
    if not stats.datasets or stats.datasets[0].num_examples == 0:
        return [f"split '{split}': {NO_ROWS}"]
    problems = []
    for feature in stats.datasets[0].features:
        bad = feature.string_stats.invalid_utf8_count if feature.HasField("string_stats") else 0
        if bad:
            name = feature.path.step[0] if feature.path.step else feature.name
            problems.append(f"split '{split}': feature '{name}': {bad} value(s) are not UTF-8 "
                            "(re-export the file as UTF-8)")
    return problems


@component
def AnomalyGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    drift: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
    leakage: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
    drift_action: Parameter[str] = "stop",
    statistics: InputArtifact[standard_artifacts.ExampleStatistics] = None,
) -> OutputDict(anomaly_count=int, drift_breaches=int, leakage_flags=int):
    problems = describe(read_anomalies(anomalies.uri, anomalies.split_names))
    # TFDV validates nothing on a split without rows (and so reports nothing).
    if statistics is not None:
        for split in artifact_utils.decode_split_names(statistics.split_names):
            problems += statistics_problems(
                split, stats_artifact_utils.load_statistics(statistics, split).proto())
    drifted = []
    if drift is not None:
        with fileio.open(os.path.join(drift.uri, DRIFT_FILE)) as f:
            drifted = describe_drift(json.load(f))
    leaks: dict = {"stops": [], "flags": []}
    if leakage is not None:
        with fileio.open(os.path.join(leakage.uri, LEAKAGE_FILE)) as f:
            leaks = json.load(f)
    for flag in leaks["flags"]:
        logging.warning("possible leakage (flagged, not stopped): %s", flag)
    sections = []
    if problems:
        sections.append(f"{len(problems)} anomal{'y' if len(problems) == 1 else 'ies'}"
                        " against schema/schema.pbtxt:\n  - " + "\n  - ".join(problems))
    if leaks["stops"]:
        sections.append("leakage between train and eval:\n  - " + "\n  - ".join(leaks["stops"]))
    if drifted and drift_action == "stop":
        sections.append(f"drift beyond the schema's thresholds in {len(drifted)} feature"
                        f"{'' if len(drifted) == 1 else 's'}:\n  - " + "\n  - ".join(drifted))
    elif drifted:
        logging.warning("drift beyond thresholds (drift_action=warn, continuing):\n  - %s",
                        "\n  - ".join(drifted))
    if sections:
        raise DataValidationError(
            "data validation found " + "; and ".join(sections)
            + "\nStopping before Transform. Fix the data, or if the change is real and intended, "
            "update schema/schema.pbtxt (domains, drift thresholds; review it like code) or run "
            "with --drift-action warn, and run again."
        )
    return {"anomaly_count": len(problems), "drift_breaches": len(drifted),
            "leakage_flags": len(leaks["flags"])}
