"""TFLite export of a real exported model: raw rows in, the SavedModel's probabilities out."""

import csv
import itertools

import numpy as np
import pytest
import tensorflow as tf

from data import bundled
from models import features as F
from models import model as M
from serving import tflite_example, tflite_export

ROWS = 200


@pytest.fixture(scope="module")
def exported(exported_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite")
    return exported_models[0], tflite_export.export(exported_models[0], out)


@pytest.fixture(scope="module")
def rows():
    """Bundled rows, some with absent optional values and categories the vocabularies never
    saw (within the raw-row contract: required values present, numbers in the domain)."""
    with open(bundled.materialize(), newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f), ROWS))
    rows[0].update(company="", dropoff_census_tract="", trip_seconds="")
    rows[1].update(company="Cab Co Never Seen", payment_type="Bitcoin")
    rows[2].update(pickup_latitude="", dropoff_longitude="", pickup_community_area="")
    return rows


def saved_model_predictions(saved_model, rows):
    model = tf.saved_model.load(saved_model)
    return model.signatures["serving_default"](**M.raw_inputs(rows))[M.PROBABILITY].numpy()


def test_float_model_predicts_raw_rows_exactly_as_the_saved_model(exported, rows):
    saved_model, paths = exported
    inputs = {k: v.numpy() for k, v in M.raw_inputs(rows).items()}
    predicted = tflite_export.TFLiteModel(paths["float"]).predict(inputs)
    np.testing.assert_allclose(predicted, saved_model_predictions(saved_model, rows),
                               rtol=1e-5, atol=1e-6)
    # One row at a time, as on a device: the batch size is not baked in.
    one = tflite_export.TFLiteModel(paths["float"]).predict(
        {k: v[:1] for k, v in inputs.items()})
    np.testing.assert_allclose(one, predicted[:1], rtol=1e-5, atol=1e-6)


def test_quantized_model_is_smaller_and_within_tolerance(exported, rows):
    saved_model, paths = exported
    assert paths["quantized"].stat().st_size < paths["float"].stat().st_size / 1.5
    inputs = {k: v.numpy() for k, v in M.raw_inputs(rows).items()}
    predicted = tflite_export.TFLiteModel(paths["quantized"]).predict(inputs)
    expected = saved_model_predictions(saved_model, rows)
    assert ((predicted >= 0) & (predicted <= 1)).all()
    np.testing.assert_allclose(predicted, expected, atol=tflite_export.QUANTIZED_ATOL)
    assert not np.allclose(predicted, expected, rtol=0, atol=1e-7)  # really quantized


def test_compare_scores_every_model_on_the_same_rows(exported, rows):
    saved_model, paths = exported
    inputs = {k: v.numpy() for k, v in M.raw_inputs(rows).items()}
    labels = np.array([F.raw_label(r) for r in rows])
    comparison = tflite_export.compare(saved_model, paths, inputs, labels, max_auc_loss=0.005)
    assert comparison.rows == ROWS
    assert comparison.auc["float"] == pytest.approx(comparison.auc["saved_model"], abs=1e-6)
    assert comparison.max_abs_diff["float"] < 1e-5
    assert 0 < comparison.max_abs_diff["quantized"] <= tflite_export.QUANTIZED_ATOL
    summary = comparison.to_dict()
    assert summary["size_ratio"] > 1.5 and summary["within_tolerance"] == (
        summary["auc_loss"] <= 0.005)


def test_missing_inputs_are_named(exported):
    _, paths = exported
    with pytest.raises(ValueError, match="missing input.*fare"):
        tflite_export.TFLiteModel(paths["float"]).predict({"company": np.array([""], object)})


@pytest.mark.parametrize("name, value, message", [
    ("fare", np.nan, "'fare' must be a finite 32-bit float \\(required"),
    ("payment_type", "", "'payment_type' is required"),
    ("trip_seconds", np.inf, "'trip_seconds' must be a finite"),
])
def test_the_device_model_refuses_what_the_saved_model_refuses(exported, rows, name, value,
                                                                message):
    saved_model, paths = exported
    inputs = {k: v.numpy() for k, v in M.raw_inputs(rows[:3]).items()}
    inputs[name] = inputs[name].copy()
    inputs[name][1] = value
    with pytest.raises(ValueError, match=message):
        tflite_export.TFLiteModel(paths["float"]).predict(inputs)
    with pytest.raises(tf.errors.InvalidArgumentError, match=name):
        tf.saved_model.load(saved_model).signatures["serving_default"](**inputs)


def test_example_script_scores_csv_rows(exported, capsys):
    _, paths = exported
    assert tflite_example.main([str(paths["quantized"]), "--input", str(bundled.materialize()),
                                "--rows", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["row 1", "row 2", "row 3"]
    assert all(0 <= float(line.rsplit("= ", 1)[1]) <= 1 for line in lines)
    assert tflite_example.main([str(paths["float"]) + ".missing", "--input", "x.csv"]) == 2
