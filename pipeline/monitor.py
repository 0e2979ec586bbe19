"""Monitor served traffic: skew against the training data, prediction drift, late-label residuals.

    python -m pipeline.monitor --log outputs/serving_logs/taxi-big-tipper/requests.jsonl
    python -m pipeline.monitor --log requests.jsonl --labels labels.csv --key key

Reads a JSONL of served rows (the local server's request log, whose records hold
`features`, `prediction`, `version` and, when the client sent X-Request-Id, `key`; or any
JSONL of flat raw rows), computes their statistics with TFDV and compares them with the
training statistics of the model version that served them, using each feature's
`skew_comparator` in schema/schema.pbtxt. It also compares the mean prediction with the
mean prediction the Evaluator measured for that model, and, given labels that arrived
later (a CSV with the key and either `big_tipper` or `tips` + `fare`), reports residuals
(label - prediction) by slice.

Writes an HTML report and exits 3 when anything breached, 0 when not (2: bad input), so
cron, a scheduler or an alerting hook can act on the status.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import features as F

log = logging.getLogger("monitor")

BREACH_EXIT = 3
SERVED_BY_MODEL = "served"  # the reference when a log names no version


class MonitorError(ValueError):
    """Bad input: the message says which file, line or setting."""


@dataclass
class Served:
    """The served rows of a log, as raw CSV-like values, with what the server said of them."""

    rows: list[dict[str, str]] = field(default_factory=list)
    predictions: list[float | None] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)  # version -> rows
    skipped: list[str] = field(default_factory=list)  # why lines were not usable


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 5.0 -> "5": integer features read back as integers
    return str(value)


def _prediction(value: Any) -> float | None:
    if isinstance(value, dict):
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        value = value[0] if value else None
    return float(value) if isinstance(value, (int, float)) else None


def read_log(path: Path, key: str | None = None) -> Served:
    """Every usable line of a request log; unusable ones are counted with the reason."""
    if not path.is_file():
        raise MonitorError(f"no request log at {path}")
    served = Served()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                served.skipped.append(f"line {number}: not JSON ({e.msg})")
                continue
            features = record.get("features", record) if isinstance(record, dict) else None
            if not isinstance(features, dict):
                served.skipped.append(f"line {number}: not an object of features")
                continue
            served.rows.append({f.name: _text(features.get(f.name)) for f in F.SERVING_FEATURES})
            served.predictions.append(_prediction(record.get("prediction")))
            served.keys.append(None if key is None else
                               _text(record.get(key, features.get(key))) or None)
            if isinstance(record.get("version"), int):
                served.versions[record["version"]] = served.versions.get(record["version"], 0) + 1
    if not served.rows:
        raise MonitorError(f"{path} holds no usable rows ({len(served.skipped)} unusable lines)")
    return served


def statistics_of(rows: list[dict[str, str]]):
    """TFDV statistics of the rows, read back through a CSV as ExampleGen reads training data,
    so integer columns are integers and blanks are absent values on both sides."""
    import tensorflow_data_validation as tfdv

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "served.csv")
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return tfdv.generate_statistics_from_csv(path)


def skew(training_stats, serving_stats, schema) -> list[dict]:
    """Distances between serving and training statistics, per `skew_comparator`."""
    import tensorflow_data_validation as tfdv

    from pipeline.components.drift_check import distances

    anomalies = tfdv.validate_statistics(training_stats, schema, environment="SERVING",
                                         serving_statistics=serving_stats)
    return distances(anomalies, skew=True)


# ---------------------------------------------------------------- the model's training run


@dataclass
class Reference:
    """What the served model was trained and evaluated on."""

    run_id: str
    version: int | None
    statistics_uri: str
    mean_prediction: float | None


def reference_for(metadata_path: str, pipeline_name: str, version: int | None) -> Reference:
    """The run that pushed `version` (None: the newest run that pushed anything)."""
    from pipeline import run_summary

    store = run_summary.connect(metadata_path)
    runs = run_summary.pipeline_runs(store, pipeline_name)
    for run in reversed(runs):
        summary = run_summary.summarize(metadata_path, pipeline_name, run.name)
        if not summary.pushed:
            continue
        pushed = int(os.path.basename(summary.pushed_destination.rstrip("/")))
        if version is not None and pushed != version:
            continue
        stats = summary.artifacts.get("StatisticsGen", {}).get("ExampleStatistics")
        if not stats:  # cached runs keep their outputs; a run without them cannot say
            continue
        return Reference(run.name, pushed, stats, summary.metrics.get("mean_prediction"))
    wanted = f"version {version}" if version is not None else "any version"
    raise MonitorError(f"no run of {pipeline_name!r} in {metadata_path} pushed {wanted}; "
                       "pass --training-statistics FILE to compare with other statistics")


# ---------------------------------------------------------------- late labels


def read_labels(path: Path, key: str) -> dict[str, int]:
    """key -> label, from `big_tipper` or from `tips` and `fare` (the training definition)."""
    if not path.is_file():
        raise MonitorError(f"no labels file at {path}")
    labels = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        if key not in columns:
            raise MonitorError(f"{path} has no key column {key!r}; columns: {sorted(columns)}")
        if F.LABEL not in columns and not {F.LABEL_SOURCE, F.FARE} <= columns:
            raise MonitorError(f"{path} needs a {F.LABEL!r} column, or {F.LABEL_SOURCE!r} "
                               f"and {F.FARE!r}")
        for row in reader:
            if F.LABEL in columns:
                labels[row[key]] = int(float(row[F.LABEL]))
            else:
                labels[row[key]] = int(float(row[F.LABEL_SOURCE] or 0)
                                       > F.TIP_FRACTION * float(row[F.FARE] or 0))
    return labels


def residuals_by_slice(served: Served, labels: dict[str, int], slices: tuple[str, ...]):
    """Per slice: rows joined, mean label, mean prediction, mean residual, AUC."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    joined = [(row, labels[k], p) for row, k, p in
              zip(served.rows, served.keys, served.predictions, strict=True)
              if k in labels and p is not None]
    if not joined:
        return None
    frame = pd.DataFrame([{**{s: row.get(s, "") for s in slices}, "label": y, "prediction": p}
                          for row, y, p in joined])
    frame["residual"] = frame["label"] - frame["prediction"]

    def summarize(group) -> dict:
        both = group["label"].nunique() == 2
        return {"rows": len(group), "mean label": group["label"].mean(),
                "mean prediction": group["prediction"].mean(),
                "mean residual": group["residual"].mean(),
                "auc": roc_auc_score(group["label"], group["prediction"]) if both else None}

    out = [{"slice": "all data", **summarize(frame)}]
    for name in slices:
        for value, group in frame.groupby(name):
            out.append({"slice": f"{name}={value}", **summarize(group)})
    return pd.DataFrame(out).set_index("slice")


# ---------------------------------------------------------------- report


def prediction_png(predictions: list[float], reference_mean: float | None) -> bytes:
    from pipeline import views

    fig, ax = views.plt.subplots(figsize=(7, 3))
    ax.hist(predictions, bins=20, range=(0, 1), color="#4c72b0")
    mean = sum(predictions) / len(predictions)
    ax.axvline(mean, color="black", label=f"served mean {mean:.3f}")
    if reference_mean is not None:
        ax.axvline(reference_mean, color="#b00020", linestyle="--",
                   label=f"evaluation mean {reference_mean:.3f}")
    ax.set_xlabel("P(big tipper)")
    ax.set_ylabel("requests")
    ax.legend()
    fig.tight_layout()
    return views.figure_png(fig)


def missing_frame(training, serving):
    """Missing share per feature, served rows next to training (an empty value counts as
    missing on both sides: views.statistics_frame)."""
    from pipeline import views

    frame = views.statistics_frame(training)[["missing %"]].rename(
        columns={"missing %": "training missing %"})
    served = views.statistics_frame(serving)[["missing %"]].rename(
        columns={"missing %": "served missing %"})
    return frame.join(served, how="outer").round(1)


def write_report(path: Path, title: str, findings: list[str], skew_rows: list[dict],
                 served: Served, reference_mean: float | None, residuals,
                 missing=None) -> Path:
    from pipeline import views

    def p(text: str, cls: str = "") -> str:
        return f"<p class='{cls}'>{html.escape(text)}</p>"

    verdict = "".join(p(f, "bad") for f in findings) or p("No breach.", "good")
    sections = [("Verdict", verdict),
                ("Served rows", p(f"{len(served.rows)} rows; by model version: "
                                  f"{served.versions or 'not recorded'}; unusable lines: "
                                  f"{len(served.skipped)}") +
                 "".join(p(s) for s in served.skipped[:5])),
                ("Skew: serving vs training statistics",
                 views.img(views.distances_png(skew_rows, "serving vs training"), "skew")
                 + views.table(views.distances_frame(skew_rows)))]
    if missing is not None:
        sections.append(("Missing values: served rows vs training", views.table(missing)))
    predictions = [x for x in served.predictions if x is not None]
    if predictions:
        sections.append(("Predictions", views.img(prediction_png(predictions, reference_mean),
                                                  "prediction distribution")))
    if residuals is not None:
        sections.append(("Residuals by slice (label - prediction, labels joined by key)",
                         views.table(residuals)))
    return views.write_page(path, title, sections)


# ---------------------------------------------------------------- command


def monitor(log_path: Path, schema_path: str, out: Path, *, training_statistics=None,
            reference: Reference | None = None, labels: Path | None = None,
            key: str | None = None, slices: tuple[str, ...] = (),
            max_prediction_shift: float = 0.1, min_rows: int = 100) -> tuple[list[str], Path]:
    """Returns the breaches (empty: none) and the report path."""
    from pipeline import views

    served = read_log(log_path, key)
    if len(served.rows) < min_rows:
        raise MonitorError(f"{log_path}: {len(served.rows)} rows; distances on fewer than "
                           f"{min_rows} rows are noise (lower --min-rows to insist)")
    training = training_statistics or views.load_statistics(
        f"{reference.statistics_uri}/Split-train/FeatureStats.pb")
    log.info("statistics of %d served rows", len(served.rows))
    serving = statistics_of(served.rows)
    skew_rows = skew(training, serving, F.load_schema(schema_path))
    findings = [f"skew: feature '{r['feature']}' {r['comparator']} {r['distance']:.3f} > "
                f"threshold {r['threshold']:g}" for r in skew_rows if r["breached"]]
    reference_mean = reference.mean_prediction if reference else None
    predictions = [x for x in served.predictions if x is not None]
    if predictions and reference_mean is not None:
        shift = sum(predictions) / len(predictions) - reference_mean
        if abs(shift) > max_prediction_shift:
            findings.append(f"predictions: mean {reference_mean + shift:.3f} vs "
                            f"{reference_mean:.3f} at evaluation (shift {shift:+.3f} beyond "
                            f"±{max_prediction_shift:g})")
    residuals = None
    if labels is not None:
        if key is None:
            raise MonitorError("--labels needs --key: the field that joins labels to requests")
        residuals = residuals_by_slice(served, read_labels(labels, key), slices)
        if residuals is None:
            findings.append(f"labels: no key of {labels} matched a served row with a prediction")
    title = f"Serving monitor: {log_path.name}" + (
        f" (model version {reference.version}, run {reference.run_id})" if reference else "")
    path = write_report(out, title, findings, skew_rows, served, reference_mean, residuals,
                        missing_frame(training, serving))
    return findings, path


def main(argv: list[str] | None = None) -> int:
    from pipeline import configs

    parser = argparse.ArgumentParser(prog="python -m pipeline.monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, default=None,
                        help="JSONL of served rows (default: SERVING_REQUEST_LOG)")
    parser.add_argument("--labels", type=Path, help="CSV of late labels, joined by --key")
    parser.add_argument("--key", help="field of each log record (or of its features) that "
                                      "identifies it; the local server logs X-Request-Id as 'key'")
    parser.add_argument("--model-version", type=int,
                        help="compare with this version's training run (default: the version "
                             "most rows in the log name, else the newest pushed)")
    parser.add_argument("--training-statistics", type=Path,
                        help="a FeatureStats.pb to compare with, instead of looking up MLMD")
    parser.add_argument("--max-prediction-shift", type=float, default=0.1,
                        help="breach when the mean prediction moves more than this from the "
                             "evaluation's (default 0.1)")
    parser.add_argument("--min-rows", type=int, default=100,
                        help="refuse logs with fewer rows (default 100)")
    parser.add_argument("--out", type=Path, help="HTML report (default: OUTPUT_ROOT/monitoring/"
                                                 "NAME/monitor-TIMESTAMP.html)")
    configs.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[monitor] %(message)s")
    for noisy in ("absl", "tensorflow", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = configs.from_args(args)
        log_path = args.log or Path(config.serving_request_log)
        out = args.out or Path(config.output_root) / "monitoring" / config.pipeline_name / \
            f"monitor-{time.strftime('%Y%m%d-%H%M%S')}.html"
        reference, training = None, None
        if args.training_statistics:
            from pipeline import views

            training = views.load_statistics(args.training_statistics)
        else:
            version = args.model_version
            if version is None:
                versions = read_log(log_path).versions
                version = max(versions, key=versions.get) if versions else None
            reference = reference_for(config.metadata_path, config.pipeline_name, version)
        findings, path = monitor(
            log_path, f"{config.schema_dir}/schema.pbtxt", out, training_statistics=training,
            reference=reference, labels=args.labels, key=args.key, slices=config.slices,
            max_prediction_shift=args.max_prediction_shift, min_rows=args.min_rows)
    except (MonitorError, configs.ConfigError) as e:
        print(f"monitor: {e}", file=sys.stderr)
        return 2
    for finding in findings:
        print(f"BREACH {finding}")
    print(f"monitor: {'breach' if findings else 'no breach'}; report: {path}")
    return BREACH_EXIT if findings else 0


if __name__ == "__main__":
    sys.exit(main())
