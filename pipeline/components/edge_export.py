"""EdgeExport: the blessed candidate as TFLite (float and quantized), checked on the eval split.

Runs after the Evaluator, from the same model artifact the Pusher pushes, so the edge model
is never a different model from the served one. The check scores the eval split with the
SavedModel and both TFLite files and records AUCs, the largest per-row difference and the
sizes in comparison.json; a quantized AUC loss over `max_auc_loss` fails the component
(the float file would still be fine, but a silently worse edge model is not).
"""

import json
import logging
import os
import tempfile

from tfx.dsl.component.experimental.annotations import (
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact, standard_artifacts
from tfx.utils import path_utils

from reporting.artifacts import EDGE_COMPARISON_FILE, REFIT_FILE

log = logging.getLogger(__name__)



class EdgeModel(artifact.Artifact):
    """A directory with model.tflite, model_quant.tflite and comparison.json."""

    TYPE_NAME = "pipeline.EdgeModel"  # importable as a schema title: see pipeline/__init__


class EdgeModelTooLossy(RuntimeError):
    """The quantized model loses more AUC than allowed against the SavedModel."""


def _is_refit(saved_model: str) -> bool:
    """Whether the model is a refit (it trained on the eval rows), by RefitCheck's record;
    the evaluated model pushed as the fallback carries the record too, not as the refit."""
    record = os.path.join(saved_model, "assets.extra", REFIT_FILE)
    if not fileio.exists(record):
        return False
    with fileio.open(record) as f:
        return json.load(f).get("pushed") == "refit"


@component
def EdgeExport(
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    examples: InputArtifact[standard_artifacts.Examples],
    edge_model: OutputArtifact[EdgeModel],
    split: Parameter[str] = "eval",
    max_auc_loss: Parameter[float] = 0.005,
) -> None:
    from models import problem as P
    from serving import tflite_export

    saved = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    problem = P.from_model(saved) or P.current()
    if not model_blessing.get_int_custom_property("blessed"):
        summary = {"exported": False, "note": "not blessed by the Evaluator; no edge export"}
        log.warning("EdgeExport: %s", summary["note"])
    elif problem.task != "binary":
        summary = {"exported": False, "note": f"the TFLite comparison (AUC) is built for "
                                              f"binary problems so far; this is {problem.task}"}
        log.warning("EdgeExport: %s", summary["note"])
    else:
        saved_model = path_utils.serving_model_path(
            model.uri, path_utils.is_old_model_artifact(model))
        with tempfile.TemporaryDirectory() as tmp:
            paths = tflite_export.export(saved_model, tmp)
            inputs, labels = tflite_export.labelled_rows(examples.uri, split, saved_model)
            comparison = tflite_export.compare(saved_model, paths, inputs, labels,
                                               max_auc_loss=max_auc_loss)
            for path in paths.values():
                fileio.copy(str(path), os.path.join(edge_model.uri, path.name), overwrite=True)
        summary = {"exported": True, "split": split, **comparison.to_dict(),
                   # A refit trained on the split it is compared on (RefitCheck's record).
                   "refit": _is_refit(saved_model),
                   "files": {kind: os.path.join(edge_model.uri, path.name)
                             for kind, path in paths.items()}}
        log.info("EdgeExport: AUC SavedModel %.4f, float %.4f, quantized %.4f; %s",
                 comparison.auc["saved_model"], comparison.auc["float"],
                 comparison.auc["quantized"], summary["size_bytes"])
    with fileio.open(os.path.join(edge_model.uri, EDGE_COMPARISON_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2))
    edge_model.set_int_custom_property("exported", int(summary["exported"]))
    if summary["exported"] and not summary["within_tolerance"]:
        raise EdgeModelTooLossy(
            f"quantized TFLite AUC {summary['auc']['quantized']:.4f} is "
            f"{summary['auc_loss']:.4f} below the SavedModel's "
            f"{summary['auc']['saved_model']:.4f} on the {split} split; allowed: "
            f"{max_auc_loss} (see {EDGE_COMPARISON_FILE} in {edge_model.uri})")
