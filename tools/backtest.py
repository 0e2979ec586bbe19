"""Backtest: how the current training settings do on periods they have not seen.

    python -m tools.backtest                          # the bundled data, by year
    python -m tools.backtest --period quarter --origins 6 --data-root DIR

For each rolling origin (the start of a year, quarter or month), the model of
models/model.py is trained as the pipeline trains it (the same preprocessing_fn analysed on
the training rows, the configured steps, hyperparameters and seed), twice: the evaluated
model on the rows before the evaluation's cut (the newest EVAL_FRACTION of the rows before
the origin held out, as ExampleGen's time split holds them out), and the refit on every row
before the origin at the same steps per row; both are scored on the period that starts
there. The gain (refit - evaluated) is what refitting after the blessing is worth on this
data; `auc` is the model the settings push (REFIT). Beside it, a gradient-boosted-tree reference
(scikit-learn) on the same rows, and for each origin's model its AUC on every later period
(how fast it decays if not retrained). It prints per-origin, mean and worst AUC, writes
`backtest.json` and `backtest.html`, and the run report shows the newest backtest.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from settings import quiet

log = logging.getLogger("tools.backtest")

PERIODS = ("year", "quarter", "month")


def period_of(seconds: int, period: str) -> str:
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    if period == "year":
        return f"{when.year}"
    if period == "quarter":
        return f"{when.year}-Q{(when.month - 1) // 3 + 1}"
    return f"{when.year}-{when.month:02d}"


def read_rows(data_root: str) -> list[dict[str, str]]:
    """Every row under `data_root` (CSV or Parquet, as ExampleGen reads them), as strings
    with '' for an absent value."""
    from data import readers

    files = sorted(p for p in Path(data_root).rglob("*") if p.is_file()
                   and not p.name.startswith("."))
    if not files:
        raise ValueError(f"no data files under {data_root}")
    rows: list[dict[str, str]] = []
    for path in files:
        for batch in readers.read_batches(str(path)):
            for record in batch.to_pylist():
                rows.append({k: _text(v) for k, v in record.items()})
    return rows


def _text(value: Any) -> str:
    if value is None or value != value:  # None or NaN: absent
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def without_marked(rows: list[dict[str, str]], control_dir: str) -> list[dict[str, str]]:
    """The rows no active contamination mark covers (control/marks.py), as every run of
    the pipeline leaves them out; the count left out is logged."""
    from control import marks

    active = marks.active(control_dir) if control_dir else []
    if not active or not rows:
        return rows
    keep = np.ones(len(rows), bool)
    for mark in active:
        seconds = np.array([_seconds(r.get(mark.column, "")) for r in rows], dtype=float)
        columns = {name: np.array([r.get(name, "") for r in rows], dtype=object)
                   for name in mark.where}
        keep &= ~mark.covers(seconds, columns)
    log.info("contamination marks leave out %d of %d rows", int((~keep).sum()), len(rows))
    return [r for r, k in zip(rows, keep, strict=True) if k]


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def origins(rows: list[dict[str, str]], time_column: str, period: str, count: int,
            min_train: int, min_test: int) -> list[tuple[str, list[int], list[int]]]:
    """(period, train row indices, test row indices) of the newest `count` origins that have
    at least `min_train` rows before them and `min_test` in them."""
    periods = [period_of(int(float(r[time_column])), period) if r.get(time_column) else ""
               for r in rows]
    found = []
    for name in sorted({p for p in periods if p}):
        train = [i for i, p in enumerate(periods) if p and p < name]
        test = [i for i, p in enumerate(periods) if p == name]
        if len(train) >= min_train and len(test) >= min_test:
            found.append((name, train, test))
    return found[-count:] if count else found


class Reference:
    """Gradient-boosted trees on the raw features: numbers as numbers, strings as categories
    (the 250 most frequent in training; the rest unknown)."""

    def __init__(self, seed: int):
        from sklearn.ensemble import HistGradientBoostingClassifier

        from models import features as F

        self.features = F.FEATURES
        self.categories: dict[str, dict[str, int]] = {}
        self.model = HistGradientBoostingClassifier(
            max_iter=300, learning_rate=0.1, random_state=seed,
            categorical_features=[f.dtype == "string" for f in F.FEATURES])

    def _matrix(self, rows: list[dict[str, str]]) -> np.ndarray:
        columns = []
        for f in self.features:
            values = [r.get(f.name, "") for r in rows]
            if f.dtype == "string":
                codes = self.categories[f.name]
                columns.append([codes.get(v, np.nan) if v else np.nan for v in values])
            else:
                columns.append([float(v) if v else np.nan for v in values])
        return np.array(columns, dtype=float).T

    def fit(self, rows: list[dict[str, str]], labels: np.ndarray) -> Reference:
        from collections import Counter

        for f in self.features:
            if f.dtype == "string":
                common = Counter(r.get(f.name, "") for r in rows if r.get(f.name)).most_common(250)
                self.categories[f.name] = {v: i for i, (v, _) in enumerate(common)}
        self.model.fit(self._matrix(rows), labels)
        return self

    def scores(self, rows: list[dict[str, str]]) -> np.ndarray:
        return self.model.predict_proba(self._matrix(rows))[:, 1]


def eval_cut(rows: list[dict[str, str]], train: list[int], time_column: str,
             fraction: float, days: float = 0.0, gap_days: float = 0.0) -> list[int]:
    """The rows before an origin that the pipeline's evaluated model trains on: ExampleGen's
    time split (TimeSplit.cut: the newest `fraction` of them, or `days`, on hour boundaries,
    less `gap_days` before that) applied to them; rows without a time are train, as there."""
    from pipeline.components.arrow_example_gen import HOUR, TimeSplit

    times = np.array([_seconds(rows[i].get(time_column, "")) for i in train])
    known = ~np.isnan(times)
    hours, counts = np.unique((times[known] // HOUR).astype(np.int64), return_counts=True)
    _, train_before = TimeSplit(time_column, fraction, days, gap_days).cut(
        dict(zip(hours.tolist(), counts.tolist(), strict=True)))
    return [i for i, t, timed in zip(train, times, known, strict=True)
            if not timed or t < train_before]


def backtest(rows: list[dict[str, str]], work: Path, period: str = "year", count: int = 0,
             steps: int = 500, hparams: dict | None = None, seed: int = 42,
             time_column: str = "", min_train: int = 1000, min_test: int = 100,
             eval_fraction: float = 0.25, eval_days: float = 0.0, eval_gap_days: float = 0.0,
             refit: bool = True) -> dict[str, Any]:
    """Trains and scores at every origin; returns what backtest.json records.

    Per origin, the two models the pipeline can push: the evaluated one (trained on the rows
    before the evaluation's cut, as judged by the Evaluator) and the refit (the same recipe
    on every row before the origin, at the same steps per row); both scored on the period.
    `auc` is the one the settings push (`refit`)."""
    from sklearn.metrics import roc_auc_score

    from models import features as F
    from models.sample_transform import instance, raw_rows_auc, train_and_export, write_transform

    time_column = time_column or F.TIME_COLUMN
    cuts = origins(rows, time_column, period, count, min_train, min_test)
    if not cuts:
        raise ValueError(f"no {period} has {min_test}+ rows with {min_train}+ rows before it "
                         f"in {len(rows):,} rows: try a shorter --period or lower --min-rows")
    labels = np.array([F.raw_label(r) for r in rows])
    periods = {name: test for name, _, test in cuts}

    def trained(folder: Path, indices: list[int], model_steps: int) -> str:
        shutil.rmtree(folder, ignore_errors=True)  # a former backtest's files
        graph = write_transform(folder, [instance(rows[i]) for i in indices], materialize=False)
        return train_and_export(graph, folder / "model", steps=model_steps, seed=seed,
                                hparams=hparams, raw=True)

    results = []
    for number, (name, train, test) in enumerate(cuts, start=1):
        started = time.monotonic()
        recipe = eval_cut(rows, train, time_column, eval_fraction, eval_days, eval_gap_days)
        refit_steps = max(1, round(steps * len(train) / max(1, len(recipe))))
        log.info("origin %d/%d: %s: the evaluated model on %d rows (%d steps), the refit on "
                 "all %d before it (%d steps); scoring its %d rows", number, len(cuts), name,
                 len(recipe), steps, len(train), refit_steps, len(test))
        evaluated = trained(work / name / "evaluated", recipe, steps)
        refitted = trained(work / name / "refit", train, refit_steps)
        pushed = refitted if refit else evaluated
        reference = Reference(seed).fit([rows[i] for i in train], labels[train])
        test_rows = [rows[i] for i in test]
        evaluated_auc = round(raw_rows_auc(evaluated, test_rows), 4)
        refit_auc = round(raw_rows_auc(refitted, test_rows), 4)
        later = {p: round(raw_rows_auc(pushed, [rows[i] for i in idx]), 4)
                 for p, idx in periods.items() if p > name}
        results.append({
            "period": name, "train_rows": len(train), "test_rows": len(test),
            "evaluated_rows": len(recipe), "evaluated_auc": evaluated_auc,
            "refit_steps": refit_steps, "refit_auc": refit_auc,
            "refit_gain": round(refit_auc - evaluated_auc, 4),
            "auc": refit_auc if refit else evaluated_auc,
            "reference_auc": round(float(roc_auc_score(
                labels[test], reference.scores(test_rows))), 4),
            "later_periods_auc": later, "seconds": round(time.monotonic() - started, 1)})
        log.info("origin %s: evaluated %.4f, refit %.4f (trees %.4f) in %.0f s", name,
                 evaluated_auc, refit_auc, results[-1]["reference_auc"],
                 results[-1]["seconds"])
    aucs = [r["auc"] for r in results]
    reference_aucs = [r["reference_auc"] for r in results]
    gains = [r["refit_gain"] for r in results]
    return {"period": period, "time_column": time_column, "rows": len(rows),
            "settings": {"steps": steps, "hparams": hparams or {}, "seed": seed,
                         "refit": refit, "eval_fraction": eval_fraction,
                         "eval_days": eval_days, "eval_gap_days": eval_gap_days},
            "origins": results, "mean_auc": round(float(np.mean(aucs)), 4),
            "worst_auc": round(float(np.min(aucs)), 4),
            "mean_reference_auc": round(float(np.mean(reference_aucs)), 4),
            "worst_reference_auc": round(float(np.min(reference_aucs)), 4),
            "mean_refit_gain": round(float(np.mean(gains)), 4),
            "refit_pays": sum(g > 0 for g in gains)}


def describe(result: dict[str, Any]) -> list[str]:
    pushed = "refit" if result["settings"].get("refit", True) else "evaluated"
    lines = [f"{'origin':<10} {'train rows':>10} {'test rows':>9} {'evaluated':>9} "
             f"{'refit':>7} {'gain':>7} {'trees':>7}"]
    for r in result["origins"]:
        lines.append(f"{r['period']:<10} {r['train_rows']:>10,} {r['test_rows']:>9,} "
                     f"{r['evaluated_auc']:>9.4f} {r['refit_auc']:>7.4f} "
                     f"{r['refit_gain']:>+7.4f} {r['reference_auc']:>7.4f}")
    lines.append(f"{'mean':<10} {'':>10} {'':>9} {'':>9} {'':>7} "
                 f"{result['mean_refit_gain']:>+7.4f} {result['mean_reference_auc']:>7.4f}")
    lines.append(f"the pushed model ({pushed}): mean AUC {result['mean_auc']:.4f}, worst "
                 f"{result['worst_auc']:.4f}; trees: mean {result['mean_reference_auc']:.4f}, "
                 f"worst {result['worst_reference_auc']:.4f}")
    origins_count = len(result["origins"])
    lines.append(f"the refit (every row before the origin) beat the evaluated model (the rows "
                 f"before the evaluation's cut) at {result['refit_pays']} of {origins_count} "
                 f"origins, by {result['mean_refit_gain']:+.4f} AUC on average")
    first = result["origins"][0]
    if first["later_periods_auc"]:
        aged = ", ".join(f"{p} {a:.4f}" for p, a in first["later_periods_auc"].items())
        lines.append(f"the {first['period']} model ({pushed}), never retrained: {aged}")
    return lines


def write(result: dict[str, Any], out: Path, pipeline_root: str) -> Path:
    """backtest.json and backtest.html in `out`; the JSON also where the run report looks."""
    from reporting import report, views

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1)
    (out / "backtest.json").write_text(text)
    shown = report.backtest_path(pipeline_root)
    shown.parent.mkdir(parents=True, exist_ok=True)
    shown.write_text(text)
    return views.write_page(out / "backtest.html", "Backtest", [
        ("Rolling origins", f"<pre>{chr(10).join(describe(result))}</pre>"
         + views.img(views.backtest_png(result["origins"]), "backtest"))])


def main(argv: list[str] | None = None) -> int:
    from pipeline import configs

    config = configs.load(env=os.environ)
    parser = argparse.ArgumentParser(prog="python -m tools.backtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=config.data_root,
                        help="CSV or Parquet files to backtest on (default DATA_ROOT)")
    parser.add_argument("--period", choices=PERIODS, default="year",
                        help="what one origin's test period is (default year)")
    parser.add_argument("--origins", type=int, default=0,
                        help="the newest this many origins (0: every one with enough rows)")
    parser.add_argument("--steps", type=int, default=config.train_steps,
                        help=f"training steps per origin (default TRAIN_STEPS, "
                             f"{config.train_steps})")
    parser.add_argument("--min-rows", type=int, default=1000,
                        help="training rows an origin needs before it (default 1000); its "
                             "period needs a tenth of that")
    parser.add_argument("--out", type=Path, default=Path(config.output_root) / "backtest",
                        help="where backtest.json and backtest.html go")
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    from models import problem as P

    try:
        P.binary_only("tools.backtest (AUC beside gradient-boosted classifiers)",
                      config.problem())
    except P.ProblemError as e:
        print(f"tools.backtest: {e}", file=sys.stderr)
        return 2

    def work():
        rows = without_marked(read_rows(args.data_root), config.control_dir)
        return backtest(rows, args.out / "work", args.period, args.origins, args.steps,
                        config.hparams, config.seed, config.time_column, args.min_rows,
                        max(1, args.min_rows // 10), config.eval_fraction, config.eval_days,
                        config.eval_gap_days, config.refit)

    print(f"backtest: {args.data_root} by {args.period}; progress below, library logs in "
          "OUTPUT_ROOT/logs/", flush=True)
    result, error, log_file = quiet.run_quietly(
        work, args, config.output_root, "backtest", ("tools.backtest",),
        "%(asctime)s %(message)s", (ValueError, FileNotFoundError))
    if error is not None:
        print(f"backtest: {error}", file=sys.stderr)
        return 2
    result["command"] = "python -m tools.backtest " + " ".join(argv or sys.argv[1:])
    result["when"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print("\n".join(describe(result)))
    print(f"report: {write(result, args.out, config.pipeline_root)}; logs: {log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
