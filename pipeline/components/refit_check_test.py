"""RefitCheck on real models and real evaluation rows: a refit that agrees with the evaluated
model goes on; one that disagrees beyond the limit, or whose loss ends elsewhere, is refused
(nothing, or the evaluated model when so configured), and SafeToServe passes nothing on."""

import json
import shutil

import pytest
from tfx.types import standard_artifacts

from pipeline.components.pusher import model_digest
from pipeline.components.refit_check import RefitCheck
from pipeline.components.safe_to_serve import SafeToServe
from pipeline.components.safe_to_serve_test import to_example
from reporting.artifacts import REFIT_FILE


@pytest.fixture(scope="module")
def examples_uri(tmp_path_factory):
    """40 bundled rows as ExampleGen writes the eval split: every column, the time too."""
    import tensorflow as tf

    from data import bundled
    from models import features as F

    root = tmp_path_factory.mktemp("examples")
    (root / "Split-eval").mkdir()
    _, rows = bundled.read_rows(bundled.materialize())
    with tf.io.TFRecordWriter(str(root / "Split-eval" / "data.gz"), "GZIP") as writer:
        for row in rows[:40]:
            example = tf.train.Example.FromString(to_example(row))
            example.features.feature[F.TIME_COLUMN].int64_list.value.append(
                int(row[F.TIME_COLUMN]))
            writer.write(example.SerializeToString())
    return str(root)


def model_artifact(tmp_path, name: str, saved_model: str):
    artifact = standard_artifacts.Model()
    artifact.uri = str(tmp_path / name)
    shutil.copytree(saved_model, tmp_path / name / "Format-Serving")
    return artifact


def run_artifact(tmp_path, name: str, loss: float):
    artifact = standard_artifacts.ModelRun()
    artifact.uri = str(tmp_path / name)
    (tmp_path / name).mkdir()
    (tmp_path / name / "history.json").write_text(json.dumps({
        "steps": 6, "history": {"loss": [loss * 1.5, loss]},
        "refit": {"rows": {"recipe": 30, "added": 10, "all": 40}, "steps": 8}}))
    return artifact


def check(tmp_path, evaluated: str, refit: str, losses=(0.3, 0.3), **limits):
    """Runs RefitCheck's executor in `tmp_path`; returns (refit.json, verdict, the output
    model's SavedModel)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", 1)
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = str(tmp_path / "no-evaluation")  # TFMA reads nothing there
    (tmp_path / "no-evaluation").mkdir(exist_ok=True)
    out_model, verdict = standard_artifacts.Model(), standard_artifacts.InfraBlessing()
    out_model.uri, verdict.uri = str(tmp_path / "out-model"), str(tmp_path / "verdict")
    (tmp_path / "verdict").mkdir()
    examples = standard_artifacts.Examples()
    examples.uri = limits.pop("examples")
    inputs = {"evaluated_model": [model_artifact(tmp_path, "evaluated", evaluated)],
              "evaluated_run": [run_artifact(tmp_path, "evaluated-run", losses[0])],
              "evaluation": [evaluation], "blessing": [blessing],
              "refit_model": [model_artifact(tmp_path, "refit", refit)],
              "refit_run": [run_artifact(tmp_path, "refit-run", losses[1])],
              "examples": [examples]}
    RefitCheck.EXECUTOR_SPEC.executor_class().Do(
        inputs, {"model": [out_model], "verdict": [verdict]},
        {"split": "eval", "max_disagreement": 0.1, "max_loss_factor": 1.5,
         "fallback": "nothing", "max_rows": 0, **limits})
    report = json.loads((tmp_path / "verdict" / REFIT_FILE).read_text())
    return report, verdict, str(tmp_path / "out-model" / "Format-Serving")


def test_a_refit_that_stands_for_the_evaluated_model_goes_on(
        exported_models, examples_uri, tmp_path):
    report, verdict, out = check(tmp_path, exported_models[0], exported_models[0],
                                 examples=examples_uri)
    assert report["passed"] and report["pushed"] == "refit", report["reasons"]
    assert report["disagreement"] == 0.0 and report["rows_compared"] == 40
    assert verdict.get_int_custom_property("blessed") == 1
    assert model_digest(out) == model_digest(exported_models[0])
    carried = json.loads((tmp_path / "out-model" / "Format-Serving" / "assets.extra" /
                          REFIT_FILE).read_text())
    assert carried["refit"]["rows"] == {"recipe": 30, "added": 10, "all": 40}


def test_a_refit_that_disagrees_is_not_pushed_and_safe_to_serve_passes_nothing_on(
        exported_models, examples_uri, tmp_path):
    a, b = exported_models
    first, _, _ = check(tmp_path / "measure", a, b, examples=examples_uri)
    apart = first["disagreement"]
    assert apart > 0  # two differently trained models

    report, verdict, out = check(tmp_path / "tight", a, b, examples=examples_uri,
                                 max_disagreement=apart / 2)
    assert not report["passed"] and report["pushed"] == "nothing"
    assert report["reasons"][0].startswith("agreement: on 40 evaluation rows")
    assert verdict.get_int_custom_property("blessed") == 0

    # SafeToServe passes nothing on: the infra blessing the Pusher checks says why.
    model_blessing = standard_artifacts.ModelBlessing()
    model_blessing.set_int_custom_property("blessed", 1)
    infra = standard_artifacts.InfraBlessing()
    infra.uri = str(tmp_path / "infra")
    examples = standard_artifacts.Examples()
    examples.uri = examples_uri
    candidate = standard_artifacts.Model()
    candidate.uri = str(tmp_path / "tight" / "out-model")
    SafeToServe.EXECUTOR_SPEC.executor_class().Do(
        {"model": [candidate], "model_blessing": [model_blessing], "examples": [examples],
         "refit": [verdict]}, {"infra_blessing": [infra]}, {"model_name": "m"})
    assert infra.get_int_custom_property("blessed") == 0
    assert "the refit failed its guards" in infra.get_string_custom_property("reason")

    # With the fallback, the evaluated model goes on instead, whole.
    report, verdict, out = check(tmp_path / "fallback", a, b, examples=examples_uri,
                                 max_disagreement=apart / 2, fallback="evaluated")
    assert report["pushed"] == "evaluated" and verdict.get_int_custom_property("blessed") == 1
    assert model_digest(out) == model_digest(a)


@pytest.mark.parametrize("losses", [(0.3, 0.6), (0.3, 0.1)])
def test_a_refit_whose_loss_ends_far_from_the_evaluated_model_s_is_refused(
        exported_models, examples_uri, tmp_path, losses):
    report, verdict, _ = check(tmp_path, exported_models[0], exported_models[0], losses,
                               examples=examples_uri)
    assert not report["passed"] and verdict.get_int_custom_property("blessed") == 0
    assert report["reasons"] == [report["reasons"][0]]
    assert report["reasons"][0].startswith("loss: its training loss ended at")
