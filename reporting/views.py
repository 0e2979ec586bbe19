"""Standalone HTML views of statistics, anomalies and evaluation results.

TFDV's and TFMA's notebook widgets load Facets and TFMA's JavaScript from the network
(TFDV's through an HTML import, which current browsers dropped), so they render blank in
many front ends and offline. These views are plain tables and PNG plots embedded as
data URIs: one file that opens in any browser, and in a notebook via IPython.display.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2  # noqa: E402

from reporting import runs  # noqa: E402

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.bad { color: #b00020; font-weight: bold; } .good { color: #1b5e20; font-weight: bold; }
img { max-width: 100%; }
"""


# ---------------------------------------------------------------- statistics


def load_statistics(path: str | Path) -> statistics_pb2.DatasetFeatureStatisticsList:
    """A StatisticsGen split file (FeatureStats.pb) or a TFDV binary stats file."""
    from tensorflow_data_validation.utils import stats_util

    return stats_util.load_stats_binary(str(path))


def _name(feature: statistics_pb2.FeatureNameStatistics) -> str:
    return feature.path.step[0] if feature.path.step else feature.name


def _common(feature) -> statistics_pb2.CommonStatistics:
    which = feature.WhichOneof("stats")
    return getattr(feature, which).common_stats if which else statistics_pb2.CommonStatistics()


def with_value(common: statistics_pb2.CommonStatistics) -> int:
    """Examples that carry a value for the feature. TFDV counts as missing only examples
    without the feature; CsvExampleGen writes an empty cell as the feature with no values,
    which TFDV counts as present. For features of at most one value (all of ours) the
    examples with a value are the values."""
    if common.max_num_values <= 1:
        return int(min(common.num_non_missing, common.tot_num_values))
    return int(common.num_non_missing)  # several values per example: no exact zero count


def statistics_frame(stats: statistics_pb2.DatasetFeatureStatisticsList) -> pd.DataFrame:
    """One row per feature: presence (an empty cell counts as missing), centre and spread,
    or the commonest values."""
    dataset = stats.datasets[0]
    rows = []
    for feature in dataset.features:
        common = _common(feature)
        total = common.num_non_missing + common.num_missing
        present = with_value(common)
        row = {
            "feature": _name(feature),
            "type": statistics_pb2.FeatureNameStatistics.Type.Name(feature.type).lower(),
            "count": present,
            "missing %": 100.0 * (total - present) / total if total else 0.0,
        }
        if feature.HasField("num_stats"):
            s = feature.num_stats
            row.update({"mean": s.mean, "std": s.std_dev, "min": s.min, "median": s.median,
                        "max": s.max, "zeros %": 100.0 * s.num_zeros / total if total else 0.0})
        elif feature.HasField("string_stats"):
            s = feature.string_stats
            top = ", ".join(f"{v.value} ({v.frequency:.0f})" for v in s.top_values[:3])
            row.update({"unique": int(s.unique), "top values": top})
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("feature").sort_index()
    return frame


def compare_frame(
    lhs: statistics_pb2.DatasetFeatureStatisticsList,
    rhs: statistics_pb2.DatasetFeatureStatisticsList,
    names: tuple[str, str] = ("before", "after"),
) -> pd.DataFrame:
    """Side by side: missing %, mean / unique and the relative change of the mean."""
    left, right = statistics_frame(lhs), statistics_frame(rhs)
    columns = [c for c in ("missing %", "mean", "std", "unique") if c in left and c in right]
    frame = left[columns].join(right[columns], lsuffix=f" {names[0]}", rsuffix=f" {names[1]}",
                               how="outer")
    if "mean" in columns:
        before, after = frame[f"mean {names[0]}"], frame[f"mean {names[1]}"]
        frame["mean change %"] = 100.0 * (after - before) / before.abs().where(before != 0)
    return frame


def _quantiles(feature) -> tuple[list[float], list[float]]:
    """(values, cumulative fractions) from the quantiles histogram: a CDF that heavy tails
    (fare, trip_miles) cannot squash the way they squash equal-width buckets."""
    for histogram in feature.num_stats.histograms:
        if histogram.type == statistics_pb2.Histogram.QUANTILES and histogram.buckets:
            total = sum(b.sample_count for b in histogram.buckets) or 1.0
            values, fractions, seen = [histogram.buckets[0].low_value], [0.0], 0.0
            for bucket in histogram.buckets:
                seen += bucket.sample_count
                values.append(bucket.high_value)
                fractions.append(seen / total)
            return values, fractions
    return [], []


def distributions_png(
    datasets: dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    features: Sequence[str] | None = None,
    columns: int = 4,
) -> bytes:
    """Per-feature distributions, one colour per dataset: CDFs for numbers, top-value
    frequencies for strings."""
    by_dataset = {label: {_name(f): f for f in stats.datasets[0].features}
                  for label, stats in datasets.items()}
    first = next(iter(by_dataset.values()))
    names = list(features) if features else sorted(first)
    rows = max(1, math.ceil(len(names) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        limits: list[tuple[float, float]] = []
        for label, features_by_name in by_dataset.items():
            feature = features_by_name.get(name)
            if feature is None:
                continue
            if feature.HasField("num_stats"):
                values, fractions = _quantiles(feature)
                ax.plot(values, fractions, marker=".", label=label)
                if len(values) > 2:  # min..90th percentile: the tail would squash the rest
                    limits.append((values[0], values[-2]))
            elif feature.HasField("string_stats"):
                top = list(feature.string_stats.top_values[:8])
                total = feature.string_stats.common_stats.num_non_missing or 1.0
                ax.barh([v.value[:18] for v in top], [v.frequency / total for v in top],
                        alpha=0.5, label=label)
                ax.tick_params(axis="y", labelsize=6)
        if limits:
            low, high = min(lo for lo, _ in limits), max(hi for _, hi in limits)
            if high > low:
                ax.set_xlim(low, high)
            name = f"{name} (CDF to p90)"
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if len(datasets) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def anomalies_frame(anomalies: anomalies_pb2.Anomalies) -> pd.DataFrame:
    rows = [{"feature": name, "severity": anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
             "anomaly": info.short_description, "detail": info.description}
            for name, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        rows.append({"feature": "(dataset)", "anomaly": info.short_description,
                     "detail": info.description,
                     "severity": anomalies_pb2.AnomalyInfo.Severity.Name(info.severity)})
    return pd.DataFrame(rows, columns=["feature", "severity", "anomaly", "detail"])


# ---------------------------------------------------------------- evaluation


def slice_metrics_frame(eval_uri: str, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Metrics per slice for the candidate, with the baseline's beside them when present."""
    import tensorflow_model_analysis as tfma

    rows: dict[str, dict[str, float]] = {}
    for slice_metrics in tfma.load_metrics(eval_uri):
        name = runs.slice_name(slice_metrics.slice_key)
        row = rows.setdefault(name, {})
        for item in slice_metrics.metric_keys_and_values:
            key, value = item.key, item.value
            if key.is_diff or not value.HasField("double_value"):
                continue
            if metrics is not None and key.name not in metrics:
                continue
            column = f"{key.name} (baseline)" if key.model_name == "baseline" else key.name
            row[column] = value.double_value.value
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "slice"
    frame = frame[sorted(frame.columns)]
    if "example_count" in frame:  # overall first, then the biggest slices
        overall = frame.loc[["all data"]] if "all data" in frame.index else frame.iloc[:0]
        rest = frame.drop(index=overall.index).sort_values("example_count", ascending=False)
        frame = pd.concat([overall, rest])
    return frame


def slice_metric_png(frame: pd.DataFrame, metric: str = "auc", min_examples: int = 20) -> bytes:
    """Horizontal bars of one metric by slice; the baseline as markers where there is one."""
    data = frame
    if "example_count" in frame:
        data = frame[frame["example_count"] >= min_examples]
    data = data[data[metric].notna()] if metric in data else data.iloc[:0]
    height = max(2.0, 0.25 * len(data) + 1)
    fig, ax = plt.subplots(figsize=(7, height))
    labels = list(data.index)
    ax.barh(labels, data.get(metric, []), color="#4c72b0", label="candidate")
    baseline = f"{metric} (baseline)"
    if baseline in data and data[baseline].notna().any():
        ax.plot(data[baseline], labels, "k|", markersize=12, label="baseline")
        ax.legend(fontsize=7)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel(metric)
    ax.set_title(f"{metric} by slice (slices with ≥ {min_examples} examples)", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def by_time_png(frame: pd.DataFrame, prefix: str, metric: str = "auc",
                min_examples: int = 20) -> bytes | None:
    """A metric over the slices `prefix=...` in time order (e.g. the quarters of the trips):
    decay reads left to right. None when there are fewer than two such slices."""
    rows = frame[[str(i).startswith(f"{prefix}=") for i in frame.index]]
    if "example_count" in rows:
        rows = rows[rows["example_count"] >= min_examples]
    if metric not in rows or len(rows) < 2:
        return None
    rows = rows.sort_index()
    labels = [str(i).split("=", 1)[1] for i in rows.index]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(labels, rows[metric], "o-", label="candidate")
    baseline = f"{metric} (baseline)"
    if baseline in rows and rows[baseline].notna().any():
        ax.plot(labels, rows[baseline], "k--", marker="|", label="baseline")
    for x, (value, count) in enumerate(zip(rows[metric], rows.get("example_count", []),
                                           strict=False)):
        ax.annotate(f"{int(count)}", (x, value), textcoords="offset points", xytext=(0, 5),
                    fontsize=6, ha="center")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by {prefix.removesuffix('_xf')} (rows per point above it)",
                 fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def backtest_png(origins: list[dict]) -> bytes:
    """Each rolling origin's out-of-time AUC: the model and the gradient-boosted reference."""
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = [o["period"] for o in origins]
    if "evaluated_auc" in origins[0]:
        ax.plot(labels, [o["evaluated_auc"] for o in origins], "^:",
                label="evaluated (rows before the evaluation's cut)")
        ax.plot(labels, [o["refit_auc"] for o in origins], "o-",
                label="refit (every row before the period)")
    else:
        ax.plot(labels, [o["auc"] for o in origins], "o-", label="this model")
    ax.plot(labels, [o["reference_auc"] for o in origins], "s--",
            label="gradient-boosted trees")
    ax.set_ylabel("AUC on the next period")
    ax.set_title("backtest: train on everything before each period, score the period",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


# ---------------------------------------------------------------- pages


def distances_frame(rows: list[dict]) -> pd.DataFrame:
    """DriftCheck's / the monitor's distance rows as a table, breaches first."""
    frame = pd.DataFrame(rows, columns=["feature", "comparator", "distance", "threshold",
                                        "breached"])
    return frame.set_index("feature")


def distances_png(rows: list[dict], title: str) -> bytes:
    """Each feature's distance as a fraction of its threshold; past the line = breach."""
    rows = sorted(rows, key=lambda r: r["distance"] / (r["threshold"] or 1))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    ratios = [r["distance"] / (r["threshold"] or 1) for r in rows]
    ax.barh([r["feature"] for r in rows], ratios,
            color=["#b00020" if r["breached"] else "#4c72b0" for r in rows])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("distance / threshold (schema/schema.pbtxt)")
    ax.set_title(title)
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def img(png: bytes, alt: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    return frame.to_html(float_format=float_format.format, na_rep="", border=0, escape=True)


def page(title: str, sections: Iterable[tuple[str, str]]) -> str:
    """A self-contained HTML page; section bodies are HTML (tables, <img>, <p>)."""
    body = "\n".join(f"<h2>{html.escape(heading)}</h2>\n{content}" for heading, content in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n"
            f"{body}\n</body></html>\n")


def write_page(path: str | Path, title: str, sections: Iterable[tuple[str, str]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title, sections), encoding="utf-8")
    return path


def history_png(history_file: str | Path) -> bytes:
    """Training curves from the Trainer's history.json: loss and AUC, train vs eval."""
    import json

    import tensorflow as tf

    with tf.io.gfile.GFile(str(history_file)) as f:
        record = json.load(f)
    history, per_round = record["history"], record.get("steps_per_round", 1)
    metrics = [m for m in ("loss", "auc") if m in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for key, label in ((metric, "train"), (f"val_{metric}", "eval")):
            if key in history:
                steps = [(i + 1) * per_round for i in range(len(history[key]))]
                ax.plot(steps, history[key], marker=".", label=label)
        ax.set_xlabel("training step")
        ax.set_title(metric, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def notebook_frame(path: str | Path, height: int = 600) -> str:
    """An <iframe srcdoc> of a written page: shows it in a notebook with its styles isolated."""
    content = Path(path).read_text(encoding="utf-8")
    return (f'<iframe srcdoc="{html.escape(content, quote=True)}" width="100%" '
            f'height="{height}" style="border:1px solid #ccc"></iframe>')


def transformed_preview(examples_uri: str, transform_graph_uri: str, split: str = "eval",
                        rows: int = 10) -> pd.DataFrame:
    """The first rows as the Trainer sees them: Transform's written rows decoded, or raw
    rows run through the Transform graph, as models.model.input_fn does."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from models.model import examples_are_raw, transformed_parser

    files = sorted(tf.io.gfile.glob(f"{examples_uri}/Split-{split}/*"))
    if not files:
        raise FileNotFoundError(f"no examples in {examples_uri}/Split-{split}")
    parse = transformed_parser(tft.TFTransformOutput(transform_graph_uri),
                               examples_are_raw(files))
    batch = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(rows)))
    frame = pd.DataFrame({k: v.numpy().reshape(len(batch), -1)[:, 0]
                          for k, v in parse(batch).items()})
    return frame[sorted(frame.columns)]
