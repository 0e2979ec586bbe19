"""RefitCheck: the guards between the refit and the push.

The Evaluator judges a candidate on the newest rows, which it never saw: that is what makes
its figures a forecast. Once it is blessed, the Refit trains the same recipe (its
hyperparameters, preprocessing and steps per row) on every row of the window, the newest
included, so the model that serves has learned from them. No rows were held out from that
model, so it cannot be judged the same way; it must instead stand for the candidate:

- **agreement**: on the evaluation rows, its answers differ from the evaluated model's by at
  most `max_disagreement` on average (binary: |difference of probabilities|; multiclass:
  total variation between the class probabilities; regression: |difference| over the
  standard deviation of the evaluated model's answers). A refit that disagrees wildly
  is a failed fit, not a better model;
- **loss**: its training loss ends within a factor `max_loss_factor` of the evaluated
  model's, either way;
- **serving**: SafeToServe loads it and replays requests within the budgets (after this).

The model this step outputs is what SafeToServe checks, an approval binds to (its own
fingerprint) and the Pusher pushes: the refit when it passed; when it failed, nothing
(`fallback` "nothing": the verdict, an InfraBlessing as the Pusher reads them, is not
blessed, and SafeToServe passes nothing on either), or the
evaluated model ("evaluated"). The model output is a loadable model either way (the
evaluated one when the refit failed), for the steps that read it whatever is pushed.
`refit.json` in the verdict names both models: the evaluated one with its out-of-time
figures, the refit with the rows it learned from; a copy travels inside the model it
outputs (assets.extra/refit.json).
"""


import json
import logging
import os
from typing import Any

import numpy as np
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

from reporting.artifacts import REFIT_FILE

log = logging.getLogger(__name__)


def read_history(model_run_uri: str) -> dict[str, Any]:
    path = os.path.join(model_run_uri, "history.json")
    if not fileio.exists(path):
        return {}
    with fileio.open(path) as f:
        return json.load(f)


def final_loss(history: dict[str, Any]) -> float | None:
    losses = history.get("history", {}).get("loss") or []
    return float(losses[-1]) if losses else None


def overall_metrics(evaluation_uri: str) -> dict[str, float]:
    """The candidate's overall figures from the Evaluator's output (not the baseline's)."""
    import tensorflow_model_analysis as tfma

    found: dict[str, float] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue
        for key_and_value in slice_metrics.metric_keys_and_values:
            key, value = key_and_value.key, key_and_value.value
            if value.HasField("double_value") and not key.is_diff and \
                    key.model_name != "baseline":
                found[key.name] = round(value.double_value.value, 6)
    return found


def answers(model_path: str, records: list[bytes], task: str) -> np.ndarray:
    """The model's outputs for serialized raw tf.Examples, through its examples signature
    (the Transform graph inside)."""
    import tensorflow as tf

    from models.model import EXAMPLES_INPUT, output_key

    signature = tf.saved_model.load(model_path).signatures["serving_examples"]
    parts = [signature(**{EXAMPLES_INPUT: tf.constant(records[i:i + 2048])})[
        output_key(task)].numpy() for i in range(0, len(records), 2048)]
    return np.concatenate(parts) if parts else np.zeros(0)


def disagreement(task: str, evaluated: np.ndarray, refit: np.ndarray) -> float:
    """How far the refit's answers are from the evaluated model's, on average (see above)."""
    if task == "regression":
        spread = float(np.std(evaluated)) or 1.0
        return float(np.mean(np.abs(refit.reshape(-1) - evaluated.reshape(-1)))) / spread
    if task == "multiclass":
        return float(np.mean(0.5 * np.abs(refit - evaluated).sum(axis=-1)))
    return float(np.mean(np.abs(refit.reshape(-1) - evaluated.reshape(-1))))


def eval_records(examples_uri: str, split: str, max_rows: int) -> list[bytes]:
    import tensorflow as tf

    files = sorted(fileio.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no {split} examples under {examples_uri}")
    data = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [r.numpy() for r in (data.take(max_rows) if max_rows else data)]


def judge(evaluated_model: str, refit_model: str, evaluated_history: dict[str, Any],
          refit_history: dict[str, Any], records: list[bytes], task: str,
          max_disagreement: float, max_loss_factor: float) -> dict[str, Any]:
    """The guards' figures and the reasons the refit failed (none: it passed)."""
    reasons = []
    apart = disagreement(task, answers(evaluated_model, records, task),
                         answers(refit_model, records, task))
    if not np.isfinite(apart) or apart > max_disagreement:
        reasons.append(f"agreement: on {len(records)} evaluation rows its answers differ from "
                       f"the evaluated model's by {apart:.4f} on average; allowed "
                       f"{max_disagreement:g} (refit_max_disagreement)")
    losses = final_loss(evaluated_history), final_loss(refit_history)
    ratio = None
    if None in losses or not all(np.isfinite(v) and v > 0 for v in losses):
        reasons.append(f"loss: the training losses cannot be compared (evaluated {losses[0]}, "
                       f"refit {losses[1]})")
    else:
        ratio = losses[1] / losses[0]
        if not 1 / max_loss_factor <= ratio <= max_loss_factor:
            reasons.append(f"loss: its training loss ended at {losses[1]:.4f}, {ratio:.2f}x "
                           f"the evaluated model's {losses[0]:.4f}; allowed within "
                           f"{max_loss_factor:g}x either way (refit_max_loss_factor)")
    return {"passed": not reasons, "reasons": reasons,
            "disagreement": round(apart, 6), "rows_compared": len(records),
            "loss": {"evaluated": losses[0], "refit": losses[1],
                     "ratio": round(ratio, 4) if ratio is not None else None},
            "limits": {"max_disagreement": max_disagreement,
                       "max_loss_factor": max_loss_factor}}


@component
def RefitCheck(
    evaluated_model: InputArtifact[standard_artifacts.Model],
    evaluated_run: InputArtifact[standard_artifacts.ModelRun],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    blessing: InputArtifact[standard_artifacts.ModelBlessing],
    refit_model: InputArtifact[standard_artifacts.Model],
    refit_run: InputArtifact[standard_artifacts.ModelRun],
    examples: InputArtifact[standard_artifacts.Examples],
    model: OutputArtifact[standard_artifacts.Model],
    verdict: OutputArtifact[standard_artifacts.InfraBlessing],
    split: Parameter[str] = "eval",
    max_disagreement: Parameter[float] = 0.25,
    max_loss_factor: Parameter[float] = 1.5,
    fallback: Parameter[str] = "nothing",
    max_rows: Parameter[int] = 5000,
) -> None:
    from models import problem as P

    evaluated_path = path_utils.serving_model_path(
        evaluated_model.uri, path_utils.is_old_model_artifact(evaluated_model))
    refit_path = path_utils.serving_model_path(
        refit_model.uri, path_utils.is_old_model_artifact(refit_model))
    evaluated_history, refit_history = read_history(evaluated_run.uri), \
        read_history(refit_run.uri)
    report: dict[str, Any] = {
        "evaluated": {"model": evaluated_path, "out_of_time": overall_metrics(evaluation.uri),
                      "steps": evaluated_history.get("steps"),
                      "rows": (refit_history.get("refit") or {}).get("rows", {}).get("recipe")},
        "refit": {"model": refit_path, "steps": refit_history.get("steps"),
                  **(refit_history.get("refit") or {})},
    }
    if not blessing.get_int_custom_property("blessed"):
        report.update(passed=False, pushed="nothing",
                      reasons=["the evaluated model was not blessed: no refit is pushed"])
    else:
        problem = P.from_model(evaluated_path) or P.current()
        report.update(judge(evaluated_path, refit_path, evaluated_history, refit_history,
                            eval_records(examples.uri, split, max_rows), problem.task,
                            max_disagreement, max_loss_factor))
        report["pushed"] = "refit" if report["passed"] else fallback
    # Always a loadable model out (batch predictions and the edge export read it too): the
    # refit that passed, else the evaluated model, which goes on only as the fallback.
    goes_on = report["pushed"] in ("refit", "evaluated")
    target = path_utils.serving_model_path(model.uri, False)
    io_utils.copy_dir(refit_path if report["pushed"] == "refit" else evaluated_path, target)
    extra = os.path.join(target, "assets.extra")
    fileio.makedirs(extra)
    with fileio.open(os.path.join(extra, REFIT_FILE), "w") as f:
        f.write(json.dumps(report, indent=2))
    with fileio.open(os.path.join(verdict.uri, REFIT_FILE), "w") as f:
        f.write(json.dumps(report, indent=2))
    # An InfraBlessing, the kind the Pusher checks: without SafeToServe the Pusher reads it
    # directly (has_model 0: push `model`), with SafeToServe that step reads it first.
    verdict.set_int_custom_property("blessed", int(goes_on))
    verdict.set_int_custom_property("has_model", 0)
    verdict.set_string_custom_property("pushed", report["pushed"])
    verdict.set_string_custom_property("reason", "; ".join(report.get("reasons", [])))
    (log.info if report.get("passed") else log.warning)(
        "RefitCheck: %s", "passed: the refit goes on" if report.get("passed") else
        f"{'; '.join(report['reasons'])}; going on with: {report['pushed']}")
