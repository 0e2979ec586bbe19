"""Monitor served traffic: served rows against the model's training rows, prediction drift, and
quality from late labels.

    python -m monitoring.monitor --log outputs/serving_logs/taxi-big-tipper/requests.jsonl
    python -m monitoring.monitor --log requests.jsonl --labels labels.csv --key key

Reads a JSONL of served rows (the local server's request log, whose records hold
`features`, `prediction`, `version` and, when the client sent X-Request-Id, `key`; or any
JSONL of flat raw rows) and checks them, feature by feature, against the training rows of
the model version that served them: distribution on the training deciles or vocabulary,
share of missing values, share of categories training never had, values the schema refuses.
Each alarm is calibrated to the batch size, so that a clean batch raises any alarm with the
configured probability (MONITOR_FALSE_ALARM_RATE, 5%), and a floor keeps trivia quiet on
large batches (monitoring/). It also compares the mean prediction with the one the
Evaluator measured, and, given labels that arrived later (a CSV with the key and either
`big_tipper` or `tips` + `fare`), reports AUC, log loss and calibration with bootstrap
intervals, by slice, alarming when AUC fell significantly below the evaluation's.

Writes an HTML report and exits 3 when anything breached, 0 when not (2: bad input), so
cron, a scheduler or an alerting hook can act on the status.
"""

from __future__ import annotations

import argparse
import csv
import html
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from control import marks as control_marks
from models import features as F
from models import problem as P
from serving import request_log

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
    times: list[float | None] = field(default_factory=list)  # the server's `time` (epoch s)
    versions: dict[int, int] = field(default_factory=dict)  # version -> rows
    skipped: list[str] = field(default_factory=list)  # why lines were not usable
    paused: int = 0  # rows answered by a fallback while serving was paused: left out

    def subset(self, indices: list[int]) -> Served:
        return Served([self.rows[i] for i in indices], [self.predictions[i] for i in indices],
                      [self.keys[i] for i in indices], [self.times[i] for i in indices],
                      dict(self.versions), list(self.skipped), self.paused)


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
    for line in request_log.read(path):
        record = line.record
        features = request_log.features(record) if record is not None else None
        if features is None:
            why = line.problem or "not an object of features"
            served.skipped.append(f"line {line.number}: {why}")
            continue
        if record.get("paused"):  # not the model's answers, not the traffic it meets
            served.paused += 1
            continue
        served.rows.append({f.name: _text(features.get(f.name)) for f in F.SERVING_FEATURES})
        served.predictions.append(_prediction(record.get("prediction")))
        served.keys.append(None if key is None else
                           _text(record.get(key, features.get(key))) or None)
        stamp = record.get("time")
        served.times.append(float(stamp) if isinstance(stamp, (int, float))
                            and not isinstance(stamp, bool) else None)
        if isinstance(record.get("version"), int):
            served.versions[record["version"]] = served.versions.get(record["version"], 0) + 1
    if not served.rows:
        raise MonitorError(f"{path} holds no usable rows ({len(served.skipped)} unusable lines, "
                           f"{served.paused} answered while serving was paused)")
    return served


TRAINING_ROWS = 50_000  # enough to place deciles and calibrate; bounded memory on big runs


def read_training_csv(path: Path) -> list[dict[str, str]]:
    """A CSV of raw rows (the training data, or any sample of it), as ExampleGen reads it."""
    if not path.is_file():
        raise MonitorError(f"no training data at {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise MonitorError(f"{path} holds no rows")
    return rows[:TRAINING_ROWS]


def read_training_examples(uri: str, limit: int = TRAINING_ROWS,
                           marks: tuple = ()) -> list[dict[str, str]]:
    """The train split ExampleGen wrote for the model's run, back as raw text values,
    without the rows a contamination mark (control/marks.py) covers: a flood or an outage
    is no reference of what normal traffic looks like."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(f"{uri}/Split-train/*"))
    if not files:
        raise MonitorError(f"no training examples under {uri}/Split-train")
    rows = []
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    for record in dataset.as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        row = {}
        for f in F.SERVING_FEATURES:
            value = features.get(f.name)
            kind = value.WhichOneof("kind") if value is not None else None
            values = list(getattr(value, kind).value) if kind else []
            row[f.name] = "" if not values else _text(
                values[0].decode("utf-8", "replace") if isinstance(values[0], bytes)
                else values[0])
        if marks and _marked(features, marks):
            continue
        rows.append(row)
    return rows


def _marked(features, marks: tuple) -> bool:
    def value(name: str):
        feature = features.get(name)
        kind = feature.WhichOneof("kind") if feature is not None else None
        values = list(getattr(feature, kind).value) if kind else []
        return values[0] if values else None

    for mark in marks:
        seconds = value(mark.column)
        columns = {name: np.array([value(name)], dtype=object) for name in mark.where}
        if seconds is not None and mark.covers(np.array([float(seconds)]), columns)[0]:
            return True
    return False


# ---------------------------------------------------------------- the model's training run


@dataclass
class Reference:
    """What the served model was trained and evaluated on."""

    run_id: str
    version: int | None
    examples_uri: str  # ExampleGen's output of that run
    metrics: dict[str, float]  # the Evaluator's overall metrics (auc, mean_prediction, ...)

    @property
    def mean_prediction(self) -> float | None:
        return self.metrics.get("mean_prediction")


def reference_for(metadata_path: str, pipeline_name: str, version: int | None) -> Reference:
    """The run that pushed `version` (None: the newest run that pushed anything)."""
    from reporting import runs

    store = runs.connect(metadata_path)
    for run in reversed(runs.pipeline_runs(store, pipeline_name)):
        summary = runs.summarize(metadata_path, pipeline_name, run.name)
        if not summary.pushed:
            continue
        pushed = int(os.path.basename(summary.pushed_destination.rstrip("/")))
        if version is not None and pushed != version:
            continue
        examples = next((by_type["Examples"] for node, by_type in summary.artifacts.items()
                         if node in ("ExampleGen", "CsvExampleGen") and "Examples" in by_type),
                        None)
        if not examples:  # cached runs keep their outputs; a run without them cannot say
            continue
        return Reference(run.name, pushed, examples, dict(summary.metrics))
    wanted = f"version {version}" if version is not None else "any version"
    raise MonitorError(f"no run of {pipeline_name!r} in {metadata_path} pushed {wanted}; "
                       "pass --training-data CSV to compare with other rows")


# ---------------------------------------------------------------- late labels


def read_labels(path: Path, key: str) -> dict[str, int]:
    """key -> label, from the label's own column or from the raw columns it is computed
    from (the problem's definition, as in training)."""
    if not path.is_file():
        raise MonitorError(f"no labels file at {path}")
    problem = F.PROBLEM
    try:
        P.binary_only("the monitor's late-label quality (AUC, calibration)", problem)
    except P.ProblemError as e:
        raise MonitorError(str(e)) from None
    labels = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        if key not in columns:
            raise MonitorError(f"{path} has no key column {key!r}; columns: {sorted(columns)}")
        sources = set(problem.label.columns())
        if F.LABEL not in columns and not sources <= columns:
            raise MonitorError(f"{path} needs a {F.LABEL!r} column, or "
                               f"{' and '.join(repr(c) for c in sorted(sources))}")
        for row in reader:
            if F.LABEL in columns:
                labels[row[key]] = int(float(row[F.LABEL]))
            else:
                labels[row[key]] = F.raw_label(row)
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
    from reporting import views

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


def checks_frame(checks):
    """One row per check: distance, the threshold at this batch size, how surprising."""
    import pandas as pd

    return pd.DataFrame([{
        "feature": c.feature, "check": c.check, "rows": c.rows, "training": c.training,
        "served": c.served, "distance": round(c.result.distance, 4),
        "threshold at this size": round(c.result.threshold, 4),
        "p (chance of a clean batch this far)": f"{c.result.p_value:.2g}",
        "alarm": c.alarm} for c in sorted(checks, key=lambda c: (not c.alarm, c.result.p_value))
    ]).set_index("feature")


def write_report(path: Path, title: str, findings: list[str], batches: list[Batch],
                 served: Served, reference_mean: float | None, settings, *,
                 window: str = "", too_few: list[tuple[str, int]] = (),
                 watch: list[str] = ()) -> Path:
    from reporting import views

    def p(text: str, cls: str = "") -> str:
        return f"<p class='{cls}'>{html.escape(text)}</p>"

    latest = batches[-1]
    verdict = "".join(p(f, "bad") for f in findings) or p("No breach.", "good")
    verdict += "".join(p(f"watch: {w}") for w in watch)
    sections = [("Verdict", verdict),
                ("Served rows", p(f"{len(served.rows)} rows; by model version: "
                                  f"{served.versions or 'not recorded'}; answered while serving "
                                  f"was paused (left out): {served.paused}; unusable lines: "
                                  f"{len(served.skipped)}") +
                 "".join(p(s) for s in served.skipped[:5]))]
    if window:
        rate = settings.false_alarm_rate
        sections.append((f"Over time: {len(batches)} {window} windows", p(
            f"Each window is a batch with its own thresholds; a clean window raises any alarm "
            f"with probability {rate:.2g}, so over {len(batches)} clean windows expect about "
            f"{rate * len(batches):.2g} alarms (monitor_false_alarm_rate). Each line is one "
            f"check's distance as a share of its threshold: 1 is the alarm line, and a line "
            f"that climbs window after window is drift growing before it crosses it.")
            + "".join(p(f"{label}: {rows} rows, fewer than --min-rows, not checked")
                      for label, rows in too_few)
            + views.img(trend_png(batches), "trend of each check by window")
            + views.table(trend_frame(batches))))
    calibrated = [c for c in latest.checks if c.check != "invalid"]
    bars = [{"feature": f"{c.feature} · {c.check}", "distance": c.result.distance,
             "threshold": c.result.threshold, "breached": c.alarm} for c in calibrated]
    where = f" (window {latest.label}, the latest)" if window else ""
    sections.append((f"Served rows vs training, feature by feature{where}",
                     p(f"Each threshold is where a clean batch of this size, drawn from the "
                       f"training rows, lands by chance with probability {latest.alpha:.2g} "
                       f"(every check of a batch together: the configured false-alarm rate), "
                       f"or the practical floor if higher.") +
                     views.img(views.distances_png(bars, "served vs training"), "checks")
                     + views.table(checks_frame(latest.checks))))
    predictions = [x for x in served.predictions if x is not None]
    if predictions:
        sections.append(("Predictions", views.img(prediction_png(predictions, reference_mean),
                                                  "prediction distribution")))
    with_quality = [b for b in batches if b.quality is not None]
    if with_quality:
        overall, by_slice = with_quality[-1].quality
        where = f" (window {with_quality[-1].label})" if window else ""
        sections.append((f"Quality from late labels (95% bootstrap intervals){where}",
                         views.table(overall) + views.table(by_slice)))
    return views.write_page(path, title, sections)


def trend_frame(batches: list[Batch]):
    """One row per window: rows, mean prediction, AUC, alarms, and each check's distance as a
    share of its threshold (the checks that came closest to the line first)."""
    import pandas as pd

    ratios = {}
    for b in batches:
        for c in b.checks:
            if c.check != "invalid" and c.result.threshold > 0:
                ratios.setdefault(f"{c.feature} · {c.check}", {})[b.label] = \
                    c.result.distance / c.result.threshold
    closest = sorted(ratios, key=lambda k: -max(ratios[k].values()))[:TREND_CHECKS]
    return pd.DataFrame([{
        "window": b.label, "rows": len(b.served.rows), "alarms": len(b.findings),
        "mean prediction": None if b.mean_prediction is None else round(b.mean_prediction, 4),
        "auc (late labels)": None if b.auc is None else round(b.auc.value, 4),
        **{k: round(ratios[k].get(b.label, float("nan")), 2) for k in closest}}
        for b in batches]).set_index("window")


def trend_png(batches: list[Batch]) -> bytes:
    from reporting import views

    frame = trend_frame(batches)
    checks = frame.columns[4:]
    fig, ax = views.plt.subplots(figsize=(8, 3.5))
    x = range(len(frame))
    for name in checks:
        ax.plot(x, frame[name], marker="o", label=name)
    ax.axhline(1.0, color="#b00020", linestyle="--", label="alarm line")
    ax.set_xticks(list(x), frame.index, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("distance / threshold")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return views.figure_png(fig)


def quality_frames(served: Served, labels: dict[str, int], slices: tuple[str, ...]):
    """(overall estimates, by-slice residuals, the AUC estimate), or None when no label joined."""
    import pandas as pd

    from monitoring import quality

    joined = [(y, p) for k, p in zip(served.keys, served.predictions, strict=True)
              if k in labels and p is not None for y in [labels[k]]]
    if not joined:
        return None
    y, scores = map(list, zip(*joined, strict=True))
    estimates = quality.estimate(y, scores)
    overall = pd.DataFrame([{"metric": name, "value": e.value, "95% low": e.low,
                             "95% high": e.high} for name, e in estimates.items()]
                           ).set_index("metric").round(4)
    return overall, residuals_by_slice(served, labels, slices), estimates["auc"]


# ---------------------------------------------------------------- command


@dataclass
class Batch:
    """One batch checked: the whole log, or one time window of it."""

    label: str
    served: Served
    checks: list  # feature_checks.Check
    findings: list[str]
    alpha: float  # per check
    mean_prediction: float | None
    quality: tuple | None = None  # (overall, by slice) frames
    auc: Any = None  # quality.Estimate, when labels joined


def check_batch(label: str, served: Served, baseline, settings, *, reference: Reference | None,
                labels: dict[str, int] | None, slices: tuple[str, ...],
                max_prediction_shift: float, min_auc_drop: float) -> Batch:
    from monitoring import quality

    checks = baseline.check(served.rows, settings, other_checks=int(labels is not None))
    calibrated = sum(1 for c in checks if c.check != "invalid")
    alpha = settings.false_alarm_rate / max(calibrated + int(labels is not None), 1)
    predictions = [x for x in served.predictions if x is not None]
    mean = sum(predictions) / len(predictions) if predictions else None
    batch = Batch(label, served, checks, [c.finding() for c in checks if c.alarm], alpha, mean)
    reference_mean = reference.mean_prediction if reference else None
    if mean is not None and reference_mean is not None \
            and abs(mean - reference_mean) > max_prediction_shift:
        batch.findings.append(f"predictions: mean {mean:.3f} vs {reference_mean:.3f} at "
                              f"evaluation (shift {mean - reference_mean:+.3f} beyond "
                              f"±{max_prediction_shift:g})")
    joined = quality_frames(served, labels, slices) if labels is not None else None
    if joined is not None:
        overall, by_slice, batch.auc = joined
        batch.quality = (overall, by_slice)
        blessed_auc = reference.metrics.get("auc") if reference else None
        if blessed_auc is not None:
            drop = quality.auc_drop(batch.auc, blessed_auc, alpha=alpha, min_drop=min_auc_drop)
            if drop:
                batch.findings.append(drop)
    return batch


WINDOW_SECONDS = {"hour": 3600, "day": 86400}
TREND_CHECKS = 8  # checks drawn in the trend: those that came closest to their thresholds
TREND_WINDOWS, MIN_TREND_WINDOWS = 6, 4  # the windows a rising trend is judged on


def windows(served: Served, window: str) -> list[tuple[str, list[int]]]:
    """(label, row indices) per UTC hour or day of the server's `time`, oldest first."""
    missing = sum(t is None for t in served.times)
    if missing:
        raise MonitorError(f"--window {window} needs the server's 'time' on every record; "
                           f"{missing} of {len(served.rows)} rows have none")
    size = WINDOW_SECONDS[window]
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(served.times):
        groups.setdefault(int(t // size), []).append(i)
    fmt = "%Y-%m-%d %H:00Z" if window == "hour" else "%Y-%m-%d"
    return [(time.strftime(fmt, time.gmtime(k * size)), rows)
            for k, rows in sorted(groups.items())]


def rising(batches: list[Batch]) -> list[str]:
    """Checks not alarming (yet) whose distance climbs steadily: over the last TREND_WINDOWS
    windows (at least MIN_TREND_WINDOWS), ranks rising with the window (Spearman >= 0.8) and
    a straight-line fit at the latest window past half the threshold. Slow drift, seen before
    it crosses the line; a watch, not an alarm."""
    from scipy.stats import spearmanr

    recent = batches[-TREND_WINDOWS:]
    if len(recent) < MIN_TREND_WINDOWS:
        return []
    out = []
    for check in recent[-1].checks:
        if check.check == "invalid" or check.alarm:
            continue
        shares = []
        for b in recent:
            same = next((c for c in b.checks if (c.feature, c.check) ==
                         (check.feature, check.check)), None)
            if same is None or same.result.threshold <= 0:
                break
            shares.append(same.result.distance / same.result.threshold)
        if len(shares) < len(recent):
            continue
        x = np.arange(len(shares))
        slope, intercept = np.polyfit(x, shares, 1)
        now = slope * x[-1] + intercept
        if slope <= 0 or now < 0.5 or spearmanr(x, shares).statistic < 0.8:
            continue
        out.append(f"feature '{check.feature}' {check.check} rising over the last "
                   f"{len(shares)} windows: " + " -> ".join(f"{v:.2f}" for v in shares)
                   + f" of its threshold; at this pace it crosses the alarm line in about "
                   f"{max(1, math.ceil((1 - now) / slope))} more windows")
    return out


def monitor(log_path: Path, schema_path: str, out: Path, *, training_rows=None,
            reference: Reference | None = None, labels: Path | None = None,
            key: str | None = None, slices: tuple[str, ...] = (),
            max_prediction_shift: float = 0.1, min_rows: int = 100,
            settings=None, min_auc_drop: float = 0.02,
            window: str = "", marks: tuple = ()) -> tuple[list[str], list[str], Path]:
    """Returns the breaches (empty: none), the checks to watch, and the report path."""
    from monitoring import feature_checks

    settings = settings or feature_checks.Settings()
    served = read_log(log_path, key)
    groups = windows(served, window) if window else [("all rows", list(range(len(served.rows))))]
    checked = [(label, rows) for label, rows in groups if len(rows) >= min_rows]
    too_few = [(label, len(rows)) for label, rows in groups if len(rows) < min_rows]
    if not checked:
        most = max(len(rows) for _, rows in groups)
        raise MonitorError(f"{log_path}: {len(served.rows)} rows"
                           + (f", at most {most} in one {window}" if window else "")
                           + f"; checks on fewer than {min_rows} rows cannot tell much "
                             "(lower --min-rows to insist)")
    if labels is not None and key is None:
        raise MonitorError("--labels needs --key: the field that joins labels to requests")
    joinable = read_labels(labels, key) if labels is not None else None
    if training_rows is None:
        log.info("training rows of run %s", reference.run_id)
        training_rows = read_training_examples(reference.examples_uri, marks=marks)
    baseline = feature_checks.Baseline(training_rows, F.load_schema(schema_path))
    log.info("%d served rows against %d training rows", len(served.rows), baseline.rows)
    batches = []
    for label, rows in checked:
        if window:
            log.info("window %s: %d rows", label, len(rows))
        batches.append(check_batch(
            label, served.subset(rows) if window else served, baseline, settings,
            reference=reference, labels=joinable, slices=slices,
            max_prediction_shift=max_prediction_shift, min_auc_drop=min_auc_drop))
    findings = [f"[{b.label}] {f}" if window else f for b in batches for f in b.findings]
    if joinable is not None and all(b.auc is None for b in batches):
        findings.append(f"labels: no key of {labels} matched a served row with a prediction")
    watch = rising(batches) if window else []
    title = f"Serving monitor: {log_path.name}" + (
        f" (model version {reference.version}, run {reference.run_id})" if reference else "")
    path = write_report(out, title, findings, batches, served,
                        reference.mean_prediction if reference else None, settings,
                        window=window, too_few=too_few, watch=watch)
    return findings, watch, path


def _run(args: argparse.Namespace, config):
    """The monitor as main() configured it: (findings, watch, report path)."""
    log_path = args.log or Path(config.serving_request_log)
    out = args.out or Path(config.output_root) / "monitoring" / config.pipeline_name / \
        f"monitor-{time.strftime('%Y%m%d-%H%M%S')}.html"
    reference, training = None, None
    if args.training_data:
        training = read_training_csv(args.training_data)
    else:
        version = args.model_version
        if version is None:
            versions = read_log(log_path).versions
            version = max(versions, key=versions.get) if versions else None
        reference = reference_for(config.metadata_path, config.pipeline_name, version)
    from monitoring.feature_checks import Settings

    settings = Settings(config.monitor_false_alarm_rate, config.monitor_min_distance,
                        config.monitor_min_share_change)
    return monitor(
        log_path, config.schema_file, out, training_rows=training,
        reference=reference, labels=args.labels, key=args.key, slices=config.slices,
        max_prediction_shift=args.max_prediction_shift, min_rows=args.min_rows,
        settings=settings, min_auc_drop=config.monitor_min_auc_drop,
        window=config.monitor_window, marks=tuple(control_marks.active(config.control_dir)))


def main(argv: list[str] | None = None) -> int:
    from monitoring.settings import MonitorSettings
    from settings import quiet
    from settings.framework import ConfigError

    parser = argparse.ArgumentParser(prog="python -m monitoring.monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, default=None,
                        help="JSONL of served rows (default: SERVING_REQUEST_LOG)")
    parser.add_argument("--labels", type=Path, help="CSV of late labels, joined by --key")
    parser.add_argument("--key", help="field of each log record (or of its features) that "
                                      "identifies it; the local server logs X-Request-Id as 'key'")
    parser.add_argument("--model-version", type=int,
                        help="compare with this version's training run (default: the version "
                             "most rows in the log name, else the newest pushed)")
    parser.add_argument("--training-data", type=Path,
                        help="a CSV of raw training rows to compare with, instead of the "
                             "model's own training examples found through MLMD")
    parser.add_argument("--max-prediction-shift", type=float, default=0.1,
                        help="breach when the mean prediction moves more than this from the "
                             "evaluation's (default 0.1)")
    parser.add_argument("--min-rows", type=int, default=100,
                        help="refuse logs with fewer rows (default 100); with a window, "
                             "windows with fewer are listed and not checked")
    parser.add_argument("--out", type=Path, help="HTML report (default: OUTPUT_ROOT/monitoring/"
                                                 "NAME/monitor-TIMESTAMP.html)")
    quiet.add_arguments(parser)
    MonitorSettings.add_arguments(parser, "monitor settings")
    args = parser.parse_args(argv)
    try:
        config = MonitorSettings.from_args(args)
    except ConfigError as e:
        print(f"monitor: {e}", file=sys.stderr)
        return 2
    done, error, log_file = quiet.run_quietly(
        lambda: _run(args, config), args, config.output_root, "monitor", ("monitor",),
        "[monitor] %(message)s", (MonitorError, ConfigError, ValueError))
    if error is not None:
        print(f"monitor: {error}", file=sys.stderr)
        return 2
    findings, watch, path = done
    for finding in findings:
        print(f"BREACH {finding}")
    for item in watch:
        print(f"WATCH {item}")
    print(f"monitor: {'breach' if findings else 'no breach'}; report: {path}; "
          f"logs: {log_file}")
    return BREACH_EXIT if findings else 0


if __name__ == "__main__":
    sys.exit(main())
