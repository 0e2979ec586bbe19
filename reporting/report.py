"""The run report: one self-contained HTML page per pipeline run, rebuilt from MLMD.

Written at the end of every local run to PIPELINE_ROOT/reports/<UTC time>.html, e.g.
20261124T120646Z.html (its path is printed with the run summary; older runs' reports are
named by their run id), and on demand for any past run:

  python -m reporting.report                 the newest run
  python -m reporting.report --run-id ID     a past run (its run id or its report's name)
  python -m reporting.report --list          past runs and pushed versions (before a rollback)
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: TensorFlow's import-time C++ lines go to its log
    from settings import quiet as _quiet

    _quiet.hold_native_stderr()

import argparse
import datetime
import hashlib
import html
import json
import logging
import os
import re
import sys
from pathlib import Path

from models import features as F
from reporting import artifacts, run_summary, runs, views

log = logging.getLogger(__name__)


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _figure(figures_dir: Path | None, key: str, draw) -> bytes:
    """A figure drawn from artifacts, kept in `figures_dir` by the artifacts' URIs: an
    artifact never changes once written, so a cached rerun's report reuses the figure (the
    distributions are most of a fully cached run's time: benchmarks/README.md)."""
    if figures_dir is None:
        return draw()
    path = figures_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.png"
    if path.is_file():
        return path.read_bytes()
    png = draw()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
    return png


def _section(build, *args) -> str:
    """A section that cannot be built says why, instead of sinking the whole report."""
    try:
        return build(*args)
    except Exception as e:  # noqa: BLE001 - a report shows what it can
        log.warning("report section %s: %s", build.__name__, e)
        return _p(f"(not available: {type(e).__name__}: {e})")


def _components(summary: runs.RunSummary) -> str:
    import pandas as pd

    if not summary.components:  # built inside the run (RunReport): states are not known yet
        return _p("Component states and times: see the run in the Vertex AI console.")
    frame = pd.DataFrame([{"component": c.node_id, "state": c.state, "seconds": c.seconds}
                          for c in summary.components]).set_index("component")
    return views.table(frame, "{:.1f}")


def _data(summary: runs.RunSummary, figures_dir: Path | None = None) -> str:
    from reporting.artifacts import describe, read_anomalies

    parts = []
    source = summary.data_source
    if source:
        parts.append(_p(f"Input: {source.get('input_base')} (span {source.get('span') or 0})"))
    stats_uri = summary.artifacts.get("StatisticsGen", {}).get("ExampleStatistics")
    if stats_uri:
        train = views.load_statistics(f"{stats_uri}/Split-train/FeatureStats.pb")
        parts.append(views.table(views.statistics_frame(train)))
        png = _figure(figures_dir, f"distributions {stats_uri}", lambda: views.distributions_png({
            "train": train,
            "eval": views.load_statistics(f"{stats_uri}/Split-eval/FeatureStats.pb")}))
        parts.append(views.img(png, "feature distributions, train vs eval"))
    anomalies_uri = summary.artifacts.get("ExampleValidator", {}).get("ExampleAnomalies")
    if anomalies_uri:
        found = describe(read_anomalies(anomalies_uri, '["train", "eval"]'))
        parts.append(_p("Anomalies against schema/schema.pbtxt: "
                        + ("none" if not found else f"{len(found)}")))
        if found:
            parts.append("<ul>" + "".join(f"<li class='bad'>{html.escape(f)}</li>"
                                          for f in found) + "</ul>")
    return "\n".join(parts) or _p("no data statistics in this run")


def _drift(summary: runs.RunSummary) -> str:
    drift = summary.drift
    if not drift:
        return _p("no drift check in this run")
    if drift.get("baseline_span") is None:
        return _p(f"Span {drift['span']}: no model is blessed yet and there is no previous "
                  "span, so there is nothing to compare with.")
    from reporting.artifacts import drift_baseline
    breached = drift["breached"]
    against = drift_baseline(drift)
    parts = [_p(f"Span {drift['span']} against {against} "
                f"({drift['split']} split): "
                + (f"{len(breached)} feature(s) beyond threshold: {', '.join(breached)}"
                   if breached else "every feature within its threshold")),
             views.img(views.distances_png(drift["features"], f"drift against {against}"),
                       "drift distances"),
             views.table(views.distances_frame(drift["features"]))]
    return "\n".join(parts)


def _training(summary: runs.RunSummary) -> str:
    run_uri = summary.artifacts.get("Trainer", {}).get("ModelRun")
    if not run_uri:
        return _p("no training in this run")
    from tfx.dsl.io import fileio

    history = os.path.join(run_uri, "history.json")
    with fileio.open(history) as f:  # local or gs:// (the report component on Vertex)
        hparams = json.load(f)["hparams"]
    return (views.img(views.history_png(history), "training curves")
            + _p("Hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hparams.items()))
            + _p(f"TensorBoard: tensorboard --logdir {run_uri}"))


def _evaluation(summary: runs.RunSummary) -> str:
    if not summary.evaluation_uri:
        return _p("no evaluation in this run")
    import pandas as pd

    frame = views.slice_metrics_frame(summary.evaluation_uri)
    parts = [_p(f"The Evaluator judged the candidate on {run_summary.evaluated_on(summary.split)}"
                ".") if summary.split else ""]
    held = summary.in_time_holdout
    if held.get("auc") is not None and "auc" in summary.metrics:
        parts.append(views.table(pd.DataFrame([
            {"evaluated on": "the newest rows, after training (eval split: blesses)",
             "rows": int(summary.metrics.get("example_count", 0)),
             "AUC": summary.metrics["auc"]},
            {"evaluated on": f"a random {held['share']:.0%} of the training period, held out",
             "rows": held["rows"], "AUC": held["auc"]},
        ]).set_index("evaluated on"), "{:.4f}"))
        parts.append(_p("A random split of the past scores the model on the months it learned "
                        "from; the newest rows are what it meets next."))
    for prefix in F.TIME_SLICES[::-1]:  # quarters, then years
        png = views.by_time_png(frame, prefix)
        if png:
            parts.append(views.img(png, f"AUC by {prefix}"))
            break
    return ("".join(parts) + views.table(frame)
            + views.img(views.slice_metric_png(frame, "auc"), "AUC by slice"))


def _leakage(summary: runs.RunSummary) -> str:
    leakage = summary.leakage
    if not leakage:
        return _p("no leakage check in this run")
    import pandas as pd

    parts = [_p(line) for line in run_summary.format_leakage(leakage)[:1]]
    parts += [f"<p class='bad'>STOP: {html.escape(s)}</p>" for s in leakage["stops"]]
    parts += [f"<p class='bad'>FLAG: {html.escape(f)}</p>" for f in leakage["flags"]]
    time = leakage.get("time", {})
    if time.get("train") and time.get("eval"):
        parts.append(_p(f"'{time['column']}': train {artifacts.utc(time['train'][0])} to "
                        f"{artifacts.utc(time['train'][1])}; eval "
                        f"{artifacts.utc(time['eval'][0])} to {artifacts.utc(time['eval'][1])}"))
    aucs = leakage.get("single_feature_auc") or {}
    if aucs:
        parts.append(_p("Each column alone as the only predictor, fitted on train, scored on "
                        "eval (AUC; 0.5 is chance):"))
        parts.append(views.table(pd.DataFrame(
            {"AUC alone": aucs}).rename_axis("column").sort_values("AUC alone",
                                                                   ascending=False), "{:.4f}"))
    return "".join(parts)


def _backtest(backtest: dict) -> str:
    import pandas as pd

    origins = backtest["origins"]
    columns = ["train_rows", "test_rows", "evaluated_auc", "refit_auc", "refit_gain",
               "reference_auc"]
    frame = pd.DataFrame(origins).set_index("period")[
        [c for c in columns if c in origins[0]] or ["train_rows", "test_rows", "auc"]]
    refit = (f" The refit (every row before the origin) against the evaluated model (the "
             f"rows before the evaluation's cut): {backtest['mean_refit_gain']:+.4f} AUC on "
             f"average, better at {backtest['refit_pays']} of {len(origins)} origins."
             if "mean_refit_gain" in backtest else "")
    return (_p(f"{backtest['command']}, run {backtest['when']}: over {len(origins)} rolling "
               f"origins, mean AUC {backtest['mean_auc']:.4f}, worst {backtest['worst_auc']:.4f} "
               f"(gradient-boosted trees: mean {backtest['mean_reference_auc']:.4f}).{refit}")
            + views.img(views.backtest_png(origins), "backtest")
            + views.table(frame, "{:.4f}"))


def _thresholds(eval_config: str) -> list[str]:
    found = []
    for spec in json.loads(eval_config or "{}").get("metrics_specs", []):
        for metric in spec.get("metrics", []):
            # The judged metric: TFMA's name for it when the config gives one (TFMA reads
            # the config as a JSON object, with or without its braces).
            config = (metric.get("config") or "").strip()
            config = json.loads(config if config.startswith("{") else f"{{{config}}}")
            name = config.get("name") or metric["class_name"]
            for per_slice in metric.get("per_slice_thresholds", []):
                threshold = per_slice.get("threshold", {})
                low = threshold.get("value_threshold", {}).get("lower_bound")
                change = threshold.get("change_threshold", {}).get("absolute")
                if low is not None:
                    found.append(f"{name} ≥ {low:g}")
                if change is not None:
                    found.append(f"{name} change vs baseline ≥ {change:+.4f}")
    return found


def _decisions(summary: runs.RunSummary) -> str:
    parts = []
    rules = _thresholds(summary.eval_config)
    if summary.blessed is not None:
        verdict = "<span class='good'>blessed</span>" if summary.blessed else \
            "<span class='bad'>NOT blessed</span>"
        parts.append(f"<p>Evaluator: {verdict} (thresholds on the overall slice: "
                     f"{html.escape('; '.join(rules) or 'none recorded')})</p>")
        if summary.validation_failures:
            parts.append("<ul>" + "".join(f"<li class='bad'>{html.escape(f)}</li>"
                                          for f in summary.validation_failures) + "</ul>")
    if summary.safe_to_serve is not None:
        verdict = "<span class='good'>safe to serve</span>" if summary.safe_to_serve else \
            "<span class='bad'>NOT safe to serve</span>"
        budgets = ""
        uri = summary.artifacts.get("SafeToServe", {}).get("InfraBlessing")
        report_file = os.path.join(uri, "safe_to_serve.json") if uri else ""
        if report_file and os.path.exists(report_file):
            with open(report_file) as f:
                b = json.load(f)["budgets"]
            budgets = (f"; budgets p99 ≤ {b['latency_p99_ms']:g} ms, "
                       f"memory ≤ {b['memory_mib']:g} MiB")
        parts.append(f"<p>SafeToServe: {verdict} "
                     f"({html.escape(summary.safe_to_serve_detail + budgets)})</p>")
    if summary.pushed is not None:
        parts.append(_p(f"Pushed to {summary.pushed_destination}" if summary.pushed
                        else "Not pushed"))
    return "\n".join(parts) or _p("the run stopped before evaluation")


def _lineage(summary: runs.RunSummary) -> str:
    window = ", ".join(map(str, summary.window_spans))
    rows = [("data", summary.data_source.get("input_base", "")),
            ("span", str(summary.data_source.get("span") or 0)),
            ("training window (spans, newest first)", window),
            ("examples", summary.artifacts.get("ExampleGen", {}).get("Examples", "")),
            ("schema", summary.artifacts.get("ImportSchemaGen", {}).get("Schema", "")),
            ("transform graph", summary.artifacts.get("Transform", {}).get("TransformGraph", "")),
            ("model", summary.artifacts.get("Trainer", {}).get("Model", "")),
            ("evaluation", summary.evaluation_uri),
            ("refit (what goes on to the push)",
             summary.artifacts.get("RefitCheck", {}).get("Model", "")),
            ("pushed", summary.pushed_destination if summary.pushed else "")]
    return "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v or '-')}</td></tr>"
                               for k, v in rows) + "</table>"


def _audit(lines: list[str]) -> str:
    return "<pre>" + html.escape("\n".join(lines)) + "</pre>"


def build(summary: runs.RunSummary, figures_dir: Path | None = None,
          backtest: dict | None = None, audit: list[str] | None = None) -> str:
    outcome = ("pushed" if summary.pushed else "not pushed") if summary.pushed is not None \
        else "stopped before the push"
    sections = [
        ("Outcome", f"<pre>{html.escape(run_summary.format_summary(summary))}</pre>"),
        ("Components", _section(_components, summary)),
        ("Data", _section(_data, summary, figures_dir)),
        ("Drift against the data in service", _section(_drift, summary)),
        ("Leakage between training and evaluation", _section(_leakage, summary)),
        ("Training", _section(_training, summary)),
        ("Evaluation (candidate, with the baseline's columns when there is one)",
         _section(_evaluation, summary)),
        ("Decisions", _section(_decisions, summary)),
        *([("Backtest: how the model does on periods it has not seen",
            _section(_backtest, backtest))] if backtest else []),
        *([("What people decided (audit log, newest last)", _section(_audit, audit))]
          if audit else []),
        ("Lineage", _section(_lineage, summary)),
    ]
    return views.page(f"{summary.pipeline_name}: run {summary.run_id} ({outcome})", sections)


def file_name(run_id: str) -> str:
    """A report's file name without `:` (which Finder and Windows cannot show or copy):
    LocalDagRunner's run id is this machine's ISO time, named here by its UTC time."""
    from settings.quiet import file_stamp

    try:
        return file_stamp(datetime.datetime.fromisoformat(run_id))
    except ValueError:  # a Vertex or Kubeflow run name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id)


def report_path(pipeline_root: str, run_id: str) -> Path:
    return Path(pipeline_root) / "reports" / f"{file_name(run_id)}.html"


def existing_report(pipeline_root: str, run_id: str) -> Path | None:
    """The report of a run on disk, under today's name or the run id it had before."""
    for path in (report_path(pipeline_root, run_id),
                 Path(pipeline_root) / "reports" / f"{run_id}.html"):
        if path.is_file():
            return path
    return None


def run_id_of(metadata_path: str, pipeline_name: str, wanted: str) -> str:
    """A run id given either as itself or as its report's name (with or without .html)."""
    wanted = wanted.removesuffix(".html")
    for run in runs.pipeline_runs(runs.connect(metadata_path), pipeline_name):
        if wanted in (run.name, file_name(run.name)):
            return run.name
    return wanted  # summarize() says which runs exist


def backtest_path(pipeline_root: str) -> Path:
    """Where `python -m tools.backtest` leaves its newest result, which reports then show."""
    return Path(pipeline_root) / "backtest" / "backtest.json"


def write(summary: runs.RunSummary, pipeline_root: str, control_dir: str = "") -> Path:
    """The run's page; with `control_dir`, the newest human actions of the audit log too."""
    from control import records

    path = report_path(pipeline_root, summary.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    backtest = backtest_path(pipeline_root)
    found = json.loads(backtest.read_text()) if backtest.is_file() else None
    audit = [r.line() for r in records.read(control_dir)[-20:]] if control_dir else None
    path.write_text(build(summary, path.parent / ".figures", found, audit), encoding="utf-8")
    return path


def list_runs(metadata_path: str, pipeline_name: str, serving_dir: str,
              pipeline_root: str = "") -> str:
    """Past runs with their outcome and report, then the versions on disk: what to check
    before a rollback."""
    from serving import versions

    store = runs.connect(metadata_path)
    lines = [f"Runs of {pipeline_name} (newest last):"]
    for run in runs.pipeline_runs(store, pipeline_name)[-20:]:
        s = runs.summarize(metadata_path, pipeline_name, run.name)
        auc = s.metrics.get("auc")
        lines.append(f"  {s.run_id:<28} auc {auc:.4f}" if auc is not None else
                     f"  {s.run_id:<28} auc   -   ")
        lines[-1] += (f"  blessed {'yes' if s.blessed else 'no' if s.blessed is False else '-'}"
                      f"  pushed {os.path.basename(s.pushed_destination) if s.pushed else '-'}")
        found = existing_report(pipeline_root, s.run_id) if pipeline_root else None
        lines[-1] += f"  {found}" if found else ""
    pushed = versions.pushed_versions(serving_dir)
    lines.append(f"Pushed versions under {serving_dir}: {pushed or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from settings import quiet
    from settings.layout import Layout

    parser = argparse.ArgumentParser(prog="python -m reporting.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", help="a past run (default: the newest)")
    parser.add_argument("--list", action="store_true", help="list runs and pushed versions")
    quiet.add_arguments(parser)
    Layout.add_arguments(parser, "where the runs are")
    args = parser.parse_args(argv)
    config = Layout.from_args(args)
    if not os.path.exists(config.metadata_path):
        print(f"reporting.report: no metadata at {config.metadata_path}; run the pipeline first",
              file=sys.stderr)
        return 2

    def work() -> str:
        if args.list:
            return list_runs(config.metadata_path, config.pipeline_name, config.serving_dir,
                             config.pipeline_root)
        run_id = args.run_id and run_id_of(config.metadata_path, config.pipeline_name,
                                           args.run_id)
        summary = runs.summarize(config.metadata_path, config.pipeline_name, run_id)
        return str(write(summary, config.pipeline_root, config.control_dir))

    text, error, log_file = quiet.run_quietly(work, args, config.output_root, "report",
                                              own=("reporting",), own_format="%(message)s",
                                              expected=(LookupError, ValueError))
    if error is not None:
        print(f"reporting.report: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
