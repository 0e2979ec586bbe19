"""What this project's components write into their artifacts, by file name, and how it is
read back: the contract between the components that write (pipeline/components/) and the
summary, report and console that read.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from tensorflow_metadata.proto.v0 import anomalies_pb2

ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes in each split directory
DRIFT_FILE = "drift.json"  # what DriftCheck writes beside it
PREDICTIONS_SUMMARY_FILE = "predictions.json"  # PredictionsExport: rows and file
EDGE_COMPARISON_FILE = "comparison.json"  # EdgeExport: TFLite against the SavedModel
REPORT_FILE = "report.html"  # RunReport: the run report inside its artifact
LEAKAGE_FILE = "leakage.json"  # LeakageCheck: overlaps, duplicates, single-feature AUCs
CONTAMINATION_FILE = "contamination.json"  # SpanExamples, SpanWindow: marked rows left out
REFIT_FILE = "refit.json"  # RefitCheck: both models, the guards' figures, what goes on


def read_anomalies(artifact_uri: str, split_names: str) -> dict[str, anomalies_pb2.Anomalies]:
    from tfx.dsl.io import fileio
    from tfx.types import artifact_utils

    result = {}
    for split in artifact_utils.decode_split_names(split_names):
        path = os.path.join(artifact_uri, f"Split-{split}", ANOMALIES_FILE)
        anomalies = anomalies_pb2.Anomalies()
        with fileio.open(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        result[split] = anomalies
    return result


# What an anomaly means for a person who wrote the CSV, where TFDV's wording is about protos.
HINTS = {
    anomalies_pb2.AnomalyInfo.INVALID_FEATURE_SHAPE:
        "a required column has empty cells: every row must carry a value, the model never "
        "guesses it",
    anomalies_pb2.AnomalyInfo.FEATURE_TYPE_NOT_PRESENT: "the column is missing or empty",
}


def _hints(info: anomalies_pb2.AnomalyInfo) -> str:
    hints = [HINTS[r.type] for r in info.reason if r.type in HINTS]
    return f": {'; '.join(hints)}" if hints else ""


def describe(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per (split, feature) anomaly, readable without TFDV."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            details = "; ".join(r.description or r.short_description for r in info.reason)
            lines.append(f"split '{split}': feature '{feature}': {info.short_description}"
                         f"{_hints(info)} ({details})")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"split '{split}': dataset: {info.short_description}{_hints(info)}")
    return lines


def drift_baseline(result: dict) -> str:
    """What the data was compared with (drift.json of older runs names only a span)."""
    return result.get("baseline") or f"span {result['baseline_span']}"


def describe_drift(result: dict) -> list[str]:
    """One line per feature whose distance to the baseline breached its threshold."""
    return [f"feature '{r['feature']}': {r['comparator']} {r['distance']:.3f} > threshold "
            f"{r['threshold']:g} (span {result['span']} vs {drift_baseline(result)})"
            for r in result["features"] if r["breached"]]


def utc(seconds: int) -> str:
    """UNIX seconds as a UTC date and time a person reads."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")


def describe_split(split: dict[str, Any]) -> str:
    """One line: how train and eval were cut."""
    if split.get("by") == "time" and split.get("eval_from") is None:
        return f"by time: no row has a time in '{split['column']}' to cut at"
    if split.get("by") == "time":
        line = (f"by time: eval is the rows of '{split['column']}' from "
                f"{utc(split['eval_from'])} on")
        if split.get("gap_days"):
            line += (f", train the rows before {utc(split['train_before'])} "
                     f"({split.get('gap_rows', 0):,} rows in the gap left out)")
        else:
            line += ", train the rows before"
        return line
    if split.get("by") == "group":
        return f"by hash of '{split['feature']}': no value of it on both sides"
    return "by hash of each row (a random split)"
