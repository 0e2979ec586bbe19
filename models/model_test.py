"""The model, its input pipeline and its exported signatures, on a real (tiny) Transform output."""


import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from models import features as F
from models import model as M
from models.preprocessing_test import ROWS, raw_row


@pytest.fixture(scope="module")
def exported(exported_models):
    return tf.saved_model.load(exported_models[0])


def test_hparams_reject_unknown_names():
    assert M.hparams({"learning_rate": 0.01})["learning_rate"] == 0.01
    with pytest.raises(ValueError, match="unknown hyperparameter 'learnin_rate'"):
        M.hparams({"learnin_rate": 0.01})


def test_model_takes_every_transformed_feature_and_outputs_a_probability():
    model = M.build_model(M.hparams())
    assert set(model.input_names) == set(M.model_input_names())
    assert model.output_shape == (None,)
    assert [layer.units for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)] \
        == [256, 128, 1]


def test_input_fn_batches_features_and_label(transform_dir):
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    data = M.input_fn([str(transform_dir / "examples" / "*")], tf_transform_output, 7,
                      shuffle=False, repeat=False)
    batches = list(data)
    assert sum(int(label.shape[0]) for _, label in batches) == len(ROWS) * 8
    features, label = batches[0]
    assert set(features) == set(M.model_input_names())
    assert features["fare_xf"].shape == (7,) and label.dtype == tf.int64


def test_input_fn_names_the_pattern_when_nothing_matches(tmp_path, transform_dir):
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    with pytest.raises(FileNotFoundError, match="no transformed examples"):
        M.input_fn([str(tmp_path / "nothing-*")], tf_transform_output, 4)


def test_signatures_exist_with_the_documented_inputs(exported):
    assert set(exported.signatures) == {"serving_default", "serving_examples", "transform_features"}
    raw = exported.signatures["serving_default"].structured_input_signature[1]
    assert set(raw) == {f.name for f in F.SERVING_FEATURES}
    assert raw["company"].dtype == tf.string and raw["fare"].dtype == tf.float64
    assert F.LABEL_SOURCE not in raw  # the tip is never a serving input
    examples = exported.signatures["serving_examples"].structured_input_signature[1]
    assert list(examples) == [M.EXAMPLES_INPUT]


def _serialized(rows, with_label=False):
    out = []
    for r in rows:
        example = tf.train.Example()
        for name, values in r.items():
            if (name == F.LABEL_SOURCE and not with_label) or not values:
                continue
            feature = example.features.feature[name]
            if isinstance(values[0], bytes):
                feature.bytes_list.value.extend(values)
            elif isinstance(values[0], int):
                feature.int64_list.value.extend(values)
            else:
                feature.float_list.value.extend(values)
        out.append(example.SerializeToString())
    return tf.constant(out)


def test_raw_and_example_signatures_agree_and_give_probabilities(exported):
    rows = ROWS + [raw_row(company=None, trip_seconds=None, dropoff_latitude=None)]
    # Rows as a REST client sends them: first value of each feature, absent ones as None.
    raw = M.raw_inputs([{k: v[0] if v else None for k, v in r.items()} for r in rows])
    by_raw = exported.signatures["serving_default"](**raw)[M.PROBABILITY].numpy()
    by_example = exported.signatures["serving_examples"](
        examples=_serialized(rows))[M.PROBABILITY].numpy()
    assert by_raw.shape == (len(rows),)
    assert np.all((by_raw >= 0) & (by_raw <= 1))
    np.testing.assert_allclose(by_raw, by_example, atol=1e-6)


def test_transform_features_signature_matches_the_model_inputs(exported):
    out = exported.signatures["transform_features"](examples=_serialized(ROWS, with_label=True))
    assert set(M.model_input_names()) | {F.LABEL_XF} <= set(out)
    assert out[F.LABEL_XF].numpy().tolist() == [1, 0, 0, 1, 0]
