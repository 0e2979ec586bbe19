"""The served model as the baseline, for orchestrators without resolvers (Kubeflow Pipelines).

Locally and on Vertex, "the latest blessed model" (Evaluator's baseline, the Trainer's warm
start) is a Resolver over the metadata store. Open-source Kubeflow Pipelines' backend
compiles no resolver task ("resolver not implemented yet", KFP's argo compiler), so on the
kubeflow profile ServedModel takes the newest version under SERVING_DIR, the folder TF
Serving (or KServe) serves from and to which the Pusher writes only blessed models. With
nothing served yet its output is empty (`found` = 0), and BaselineEvaluator and the
Trainer's run_fn treat an empty model as none: the first run is judged on thresholds alone.
"""


import logging
import os

from tfx.components import Evaluator
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import io_utils, path_utils

from serving import versions

log = logging.getLogger(__name__)


def has_saved_model(path: str | None) -> bool:
    return bool(path) and fileio.exists(os.path.join(path, "saved_model.pb"))


def evaluated_behind(served: str) -> str:
    """A served refit's evaluated model (RefitCheck's record inside it), if still there: the
    baseline a candidate is judged against, as the resolver picks elsewhere. The refit has
    trained on rows a new evaluation may hold out again (the same data rerun), where it
    would score as if it had never seen them."""
    import json

    from reporting.artifacts import REFIT_FILE

    record = os.path.join(served, "assets.extra", REFIT_FILE)
    if not fileio.exists(record):
        return ""
    with fileio.open(record) as f:
        evaluated = (json.load(f).get("evaluated") or {}).get("model", "")
    return evaluated if has_saved_model(evaluated) else ""


@component
def ServedModel(
    model: OutputArtifact[standard_artifacts.Model],
    serving_dir: Parameter[str],
) -> None:
    version = versions.newest_version(serving_dir)
    source = versions.version_dir(serving_dir, version) if version is not None else ""
    if not has_saved_model(source):
        log.info("no model served under %s yet: no baseline, no warm start", serving_dir)
        model.set_int_custom_property("found", 0)
        return
    evaluated = evaluated_behind(source)
    io_utils.copy_dir(evaluated or source, path_utils.serving_model_path(model.uri))
    model.set_int_custom_property("found", 1)
    model.set_string_custom_property("served_version", str(version))
    model.set_string_custom_property("source", evaluated or source)
    log.info("baseline: served version %s (%s)", version,
             f"a refit: the model evaluated for it, {evaluated}" if evaluated else source)


class _Executor(evaluator_executor.Executor):
    """TFX's Evaluator, given no baseline when the baseline artifact holds no model."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 - TFX's name
        key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = [a for a in input_dict.get(key, [])
                     if has_saved_model(path_utils.serving_model_path(a.uri))]
        if not baselines:
            input_dict = {k: v for k, v in input_dict.items() if k != key}
        super().Do(input_dict, output_dict, exec_properties)


class BaselineEvaluator(Evaluator):
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(_Executor)
