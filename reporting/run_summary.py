"""The summary a person reads at the end of a run, built from what reporting.runs read back:
a line per component, data validation and drift, metrics against the baseline, blessed or
not, safe to serve or not, and what was pushed where."""

from __future__ import annotations

from typing import Any

from reporting.artifacts import drift_baseline, utc
from reporting.runs import RunSummary

# The headline metrics of each task, in the order a person reads them; any other metric
# the Evaluator computed follows them.
HEADLINE_METRICS = ("auc", "binary_accuracy", "precision", "recall", "calibration",
                    "accuracy", "log_loss", "rmse", "mae", "mse", "mean_label",
                    "mean_prediction", "example_count")


def headline(metrics: dict[str, float]) -> list[str]:
    """The run's metrics in reading order: the headline ones first, then the rest."""
    return [n for n in HEADLINE_METRICS if n in metrics] + \
        sorted(n for n in metrics if n not in HEADLINE_METRICS)


def describe_edge_model(edge: dict[str, Any]) -> str:
    if not edge.get("exported"):
        return f"TFLite: not exported ({edge.get('note', '')})"
    auc, size = edge["auc"], edge["size_bytes"]
    seen = " (the refit's, which trained on these rows: the exports against each other, " \
        "not a forecast)" if edge.get("refit") else ""
    return (f"TFLite: eval AUC {auc['float']:.4f} float, {auc['quantized']:.4f} quantized "
            f"(SavedModel {auc['saved_model']:.4f}){seen}; {size['float'] / 1024:.0f} KiB -> "
            f"{size['quantized'] / 1024:.0f} KiB; {edge['files']['quantized']}")


def pushed_lines(summary: RunSummary) -> list[str]:
    approval = summary.approval
    if summary.pushed:
        by = f" (approved by {approval['approved_by']})" if approval.get("approved_by") else ""
        return [f"Pushed: {summary.pushed_destination}{by}"]
    if approval.get("awaiting_approval"):
        fingerprint = approval["awaiting_approval"]
        model = summary.artifacts.get("RefitCheck", summary.artifacts.get("Trainer", {})) \
            .get("Model", "")
        return ["Pushed: no: WAITING FOR APPROVAL of this blessed model",
                f"  model {model}", f"  fingerprint {fingerprint}",
                f"  approve: python -m tools.approval approve {fingerprint[:16]} --reason ...",
                f"  reject:  python -m tools.approval reject {fingerprint[:16]} --reason ...",
                "  then the next run pushes it (the rest is cached)"]
    if approval.get("rejected"):
        return [f"Pushed: no: rejected by {approval['rejected']}"]
    if summary.blessed and summary.refit.get("pushed") == "nothing":
        return ["Pushed: no: the refit failed a guard (Refit above) and refit_fallback is "
                "nothing"]
    return ["Pushed: no (not blessed)" if not summary.blessed else "Pushed: no"]


def format_refit(refit: dict[str, Any]) -> list[str]:
    """The refit: the rows it learned from, how it held to the evaluated model, what went
    on to be pushed."""
    if not refit:
        return []
    trained, rows = refit.get("refit") or {}, (refit.get("refit") or {}).get("rows") or {}
    lines = [f"Refit (the blessed recipe on every row): {rows.get('all', 0):,} rows, the "
             f"{rows.get('added', 0):,} the evaluation held out included; "
             f"{trained.get('steps')} steps (the evaluated model: {trained.get('recipe_steps')} "
             f"on {rows.get('recipe', 0):,} rows)"]
    if "disagreement" in refit:
        loss, limits = refit.get("loss") or {}, refit.get("limits") or {}
        ratio = f"{loss['ratio']:.2f}x" if loss.get("ratio") is not None else "n/a"
        lines.append(f"  agrees with the evaluated model on {refit['rows_compared']:,} "
                     f"evaluation rows within {refit['disagreement']:.4f} on average (limit "
                     f"{limits.get('max_disagreement'):g}); training loss {ratio} the "
                     f"evaluated model's (limit {limits.get('max_loss_factor'):g}x)")
    lines += [f"  - FAILED {reason}" for reason in refit.get("reasons", [])]
    went = {"refit": "the refit (the evaluation above is its forecast)",
            "evaluated": "the evaluated model (refit_fallback)"}.get(refit.get("pushed"),
                                                                    "nothing")
    lines.append(f"  goes on to be pushed: {went}")
    return lines


def evaluated_on(split: dict[str, Any]) -> str:
    """What the eval split is, in the words the summary and the report use."""
    if split.get("by") == "time" and split.get("eval_from") is not None:
        return (f"out of time: the rows from {utc(split['eval_from'])} on, newer than every "
                "training row")
    if split.get("by") == "group":
        return f"a split by '{split['feature']}': groups the model never trained on"
    if split.get("by") == "hash":
        return "a random split of the same period as training"
    return "eval split"


def in_time_line(summary: RunSummary) -> str:
    """The random-split AUC beside the out-of-time one: how much a random split would have
    overstated what the model does next."""
    held, auc = summary.in_time_holdout, summary.metrics.get("auc")
    if not held or held.get("auc") is None:
        return ""
    line = (f"Random split of the training period (in-time holdout, {held['share']:.0%}, "
            f"{held['rows']:,} rows): AUC {held['auc']:.4f}")
    if auc is not None:
        gap = held["auc"] - auc
        line += f"; the evaluation's AUC is {abs(gap):.4f} {'lower' if gap > 0 else 'higher'}"
    return line


def format_contamination(contamination: dict[str, Any]) -> list[str]:
    """The contamination marks this run's rows were cleaned of, with what each left out."""
    if not contamination:
        return []
    lines = [f"Contamination marks honoured: {len(contamination['marks'])}, "
             f"{contamination['rows']:,} row(s) left out of training and evaluation"]
    for mark in contamination["marks"]:
        rows = contamination["excluded"].get(mark["id"], 0)
        lines.append(f"  {mark['describe']}: {rows:,} row(s)")
    return lines


def format_leakage(leakage: dict[str, Any]) -> list[str]:
    """What LeakageCheck found between the rows the model trained and was judged on."""
    if not leakage:
        return []
    found = []
    by = leakage.get("split", {}).get("by")
    if by == "time":
        found.append("no overlap in time" if not leakage["stops"] else "OVERLAP in time")
    elif by == "group":
        shared = leakage.get("groups", {}).get("shared", 0)
        found.append(f"{shared:,} group(s) on both sides")
    found.append(f"{leakage.get('duplicates', {}).get('count', 0):,} duplicated row(s)")
    aucs = leakage.get("single_feature_auc") or {}
    if aucs:
        name, auc = next(iter(aucs.items()))
        found.append(f"strongest single column: {name} (AUC {auc:.3f} alone)")
    lines = [f"Leakage checks (train vs eval): {'; '.join(found)}"]
    lines += [f"  - STOP: {line}" for line in leakage.get("stops", [])]
    lines += [f"  - FLAG: {line}" for line in leakage.get("flags", [])]
    return lines


def format_drift(drift: dict[str, Any]) -> list[str]:
    if not drift:
        return []
    if drift.get("baseline_span") is None:
        return [f"Drift: span {drift['span']} has no blessed model's data or previous span "
                "to compare with"]
    lines = [f"Drift: span {drift['span']} vs {drift_baseline(drift)}: "
             f"{len(drift['breached'])} feature(s) beyond threshold"]
    for row in drift["features"][:5]:
        mark = "BREACH" if row["breached"] else "ok"
        lines.append(f"  {row['feature']:<24} {row['comparator']:<15} {row['distance']:.3f} "
                     f"(threshold {row['threshold']:g}) {mark}")
    return lines


def format_summary(summary: RunSummary, components: bool = True) -> str:
    """What a person reads at the end of a run; `components=False` when a console already
    showed a line per component."""
    lines = [f"Run {summary.run_id} of {summary.pipeline_name}"]
    for c in summary.components if components else []:
        lines.append(f"  {c.node_id:<32} {c.state:<7} {c.seconds:7.1f} s")
    lines.append(f"  {'total (sum of components)':<32} {'':<7} {summary.wall_seconds:7.1f} s")
    gate = next((c for c in summary.components if c.node_id == "AnomalyGate"), None)
    if gate is not None and gate.state in ("ran", "cached"):
        lines.append("Data validation: no anomalies against the problem's schema")
    if summary.window_spans:
        lines.append(f"Training window: spans {', '.join(map(str, summary.window_spans))}")
    lines += format_drift(summary.drift)
    lines += format_leakage(summary.leakage)
    lines += format_contamination(summary.contamination)
    if summary.metrics:
        lines.append(f"Evaluation ({evaluated_on(summary.split)}; candidate vs last blessed "
                     "model):")
        for name in headline(summary.metrics):
            if isinstance(summary.metrics[name], (int, float)):
                base = summary.baseline_metrics.get(name)
                base_text = f"{base:.4f}" if base is not None else "none yet"
                lines.append(f"  {name:<18} {summary.metrics[name]:.4f}   baseline {base_text}")
    observed = summary.observed_metrics
    name = next((n for n in headline(observed) if n != "example_count"), None)
    if name is not None and name in summary.metrics:
        lines.append(f"Where the label is observed ({observed.get('example_count', 0):,.0f} "
                     f"rows): {name} {observed[name]:.4f}, against {summary.metrics[name]:.4f} "
                     "on every row")
    holdout = in_time_line(summary)
    if holdout:
        lines.append(holdout)
    if summary.blessed is not None:
        lines.append(f"Blessed: {'yes' if summary.blessed else 'NO'}")
        for failure in summary.validation_failures:
            lines.append(f"  - {failure}")
    if summary.blessed:
        lines += format_refit(summary.refit)
    if summary.safe_to_serve is not None:
        verdict = "yes" if summary.safe_to_serve else "NO"
        lines.append(f"Safe to serve: {verdict} ({summary.safe_to_serve_detail})")
    if summary.pushed is not None:
        lines += pushed_lines(summary)
    if summary.batch_predictions:
        batch = summary.batch_predictions
        lines.append(f"Batch predictions: {batch['rows']} rows -> {batch['file']}" if batch.get(
            "file") else f"Batch predictions: {batch['rows']} rows ({batch.get('note', '')})")
    if summary.edge_model:
        lines.append(describe_edge_model(summary.edge_model))
    if summary.report_path:
        lines.append(f"Report: {summary.report_path}")
    return "\n".join(lines)
