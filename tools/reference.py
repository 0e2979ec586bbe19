"""A reference for a run's model: gradient-boosted trees on the same train and eval rows.

    python -m tools.reference [--output-root DIR] [--problem-dir DIR]

Reads the rows the newest run's ExampleGen wrote (every column), fits scikit-learn's
HistGradientBoosting on the problem's features and label, and prints the task's metric on
the eval rows beside the run's own, overall and, when the problem says where its label is
observed (`label.observed`), on those rows too. What "near the trees" means in
tests/test_own_problem.py and the figures in benchmarks/README.md.
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: TensorFlow's import-time C++ lines go to its log
    from settings import quiet as _quiet

    _quiet.hold_native_stderr()

import argparse
import glob
import os
import sys

import numpy as np

from models import problem as P


def split_rows(pipeline_root: str, split: str) -> list[dict]:
    """Every column of the rows the newest ExampleGen output holds in `split`."""
    import tensorflow as tf

    runs = sorted(glob.glob(f"{pipeline_root}/ExampleGen/examples/*"),
                  key=lambda p: int(p.rsplit("/", 1)[-1]) if p.rsplit("/", 1)[-1].isdigit()
                  else 0)
    if not runs:
        raise FileNotFoundError(f"no ExampleGen output under {pipeline_root}: run the pipeline")
    files = glob.glob(f"{runs[-1]}/Split-{split}/*")
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        row = {}
        for key, feature in tf.train.Example.FromString(record.numpy()).features.feature.items():
            values = list(getattr(feature, feature.WhichOneof("kind") or "float_list").value)
            value = values[0] if values else None
            row[key] = value.decode() if isinstance(value, bytes) else value
        rows.append(row)
    return rows


def _matrix(problem: P.Problem, rows: list[dict]) -> np.ndarray:
    out = []
    for f in problem.features:
        values = [r.get(f.name) for r in rows]
        try:
            out.append([np.nan if v in (None, "") else float(v) for v in values])
        except (TypeError, ValueError):
            out.append([hash(str(v)) % 1000 for v in values])
    return np.array(out).T


def observed(problem: P.Problem, rows: list[dict]) -> np.ndarray:
    """Which rows the problem's `label.observed` rule keeps (all when it has none)."""
    if not problem.label.observed:
        return np.ones(len(rows), bool)
    rule = P.Rule(problem.label.observed)
    texts = rule.string_columns()
    columns = {c: P._as_strings([r.get(c) for r in rows]) if c in texts
               else P._as_numbers([r.get(c) for r in rows]) for c in rule.columns}
    return np.asarray(rule.evaluate(columns, P.NumpyOps), dtype=bool)


def trees_metric(problem: P.Problem, train: list[dict], evaluation: list[dict],
                 keep: np.ndarray | None = None) -> float:
    """The task's metric (AUC, accuracy, RMSE) of gradient-boosted trees fitted on `train`,
    on the `evaluation` rows `keep` selects."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import roc_auc_score

    def labels(rows):
        return problem.raw_labels({c: [r.get(c) for r in rows] for c in problem.label.columns()})

    x_train, y_train = _matrix(problem, train), labels(train)
    x_eval, y_eval = _matrix(problem, evaluation), labels(evaluation)
    if keep is not None:
        x_eval, y_eval = x_eval[keep], y_eval[keep]
    if problem.task == "regression":
        model = HistGradientBoostingRegressor(random_state=0).fit(x_train, y_train)
        return float(np.sqrt(np.mean((model.predict(x_eval) - y_eval) ** 2)))
    model = HistGradientBoostingClassifier(random_state=0).fit(x_train, y_train)
    if problem.task == "binary":
        return float(roc_auc_score(y_eval, model.predict_proba(x_eval)[:, 1]))
    return float(np.mean(model.predict(x_eval) == y_eval))


def main(argv: list[str] | None = None) -> int:
    from pipeline import configs
    from reporting import runs
    from settings import quiet

    parser = argparse.ArgumentParser(prog="python -m tools.reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem-dir", help="the problem (default PROBLEM_DIR: the taxi's)")
    parser.add_argument("--output-root", help="the run's outputs (default OUTPUT_ROOT)")
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("problem_dir", args.problem_dir),
                                   ("output_root", args.output_root)) if v}
    try:
        config = configs.PipelineConfig.load(env=os.environ, **overrides)
    except configs.ConfigError as e:
        print(f"tools.reference: {e}", file=sys.stderr)
        return 2

    def work():
        problem = config.problem()
        train = split_rows(config.pipeline_root, "train")
        evaluation = split_rows(config.pipeline_root, "eval")
        summary = runs.summarize(config.metadata_path, config.pipeline_name)
        metric = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}[problem.task]
        lines = [f"{problem.name}: {len(train):,} train rows, {len(evaluation):,} eval rows "
                 f"(the newest run's split)",
                 f"  every eval row:  {metric} {summary.metrics.get(metric, float('nan')):.4f} "
                 f"(this run's model), {trees_metric(problem, train, evaluation):.4f} "
                 "(gradient-boosted trees)"]
        if problem.label.observed:
            keep = observed(problem, evaluation)
            ours = summary.observed_metrics.get(metric, float("nan"))
            lines.append(f"  where {problem.label.observed} ({int(keep.sum()):,} rows): "
                         f"{metric} {ours:.4f} (this run's model), "
                         f"{trees_metric(problem, train, evaluation, keep):.4f} (trees)")
        return lines

    lines, error, _ = quiet.run_quietly(work, args, config.output_root, "reference",
                                        ("tools",), "%(message)s",
                                        (FileNotFoundError, P.ProblemError))
    if error is not None:
        print(f"tools.reference: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
