"""The model, its input pipeline and its exported signatures, on a real (tiny) Transform output."""

import os

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
    with pytest.raises(FileNotFoundError, match="no examples match"):
        M.input_fn([str(tmp_path / "nothing-*")], tf_transform_output, 4)


def _rows(data: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(integer columns with the label, float columns) of every row, in one canonical order."""
    names = M.model_input_names()
    batches = [([features[n].numpy() for n in names], label.numpy()) for features, label in data]
    columns = [np.concatenate([b[0][i] for b in batches]) for i in range(len(names))]
    label = np.concatenate([b[1] for b in batches])
    ints = np.stack([c for c in columns if c.dtype.kind == "i"] + [label], axis=1)
    floats = np.stack([c for c in columns if c.dtype.kind == "f"], axis=1)
    order = np.lexsort([*np.round(floats, 4).T, *ints.T])
    return ints[order], floats[order]


@pytest.mark.parametrize("raw", [True, None])
def test_raw_rows_through_the_graph_equal_transforms_written_rows(transform_dir, raw):
    """Without materialization the Trainer runs the Transform graph on raw rows as it reads
    them: every row's features and label must equal what Transform wrote for the same rows.
    Ids, buckets and labels to the bit; floats to float32's last digits, which differ with
    the batch in Transform's own output too (identical rows, batches 2 and 3: -0.5773513
    and -0.5773497). `raw=None` must tell the two kinds of file apart by themselves."""
    output = tft.TFTransformOutput(str(transform_dir / "graph"))
    written_ints, written_floats = _rows(M.input_fn(
        [str(transform_dir / "examples" / "*")], output, 5, shuffle=False, repeat=False,
        raw=None))
    ints, floats = _rows(M.input_fn([str(transform_dir / "raw" / "*")], output, 5,
                                    shuffle=False, repeat=False, raw=raw))
    assert len(ints) == len(ROWS) * 8
    np.testing.assert_array_equal(ints, written_ints)
    np.testing.assert_allclose(floats, written_floats, rtol=1e-5, atol=1e-6)
    assert set(ints[:, -1]) == {0, 1}  # both labels occur
    assert np.ptp(floats, axis=0).max() > 1  # real z-scores, not all zeros


def test_the_holdout_scored_a_batch_at_a_time_is_the_holdout_training_leaves_out(
        transform_dir):
    """holdout_batches (the in-time figure's reader) and input_fn's holdout (what training
    leaves out) must hold the same rows, or the figure would score rows the model saw."""
    output = tft.TFTransformOutput(str(transform_dir / "graph"))
    files = [str(transform_dir / "raw" / "*")]
    ints, floats = _rows(M.holdout_batches(files, output, 0.5, raw=True))
    held_ints, held_floats = _rows(M.input_fn(files, output, 5, shuffle=False, repeat=False,
                                              raw=True, holdout=0.5, take="holdout"))
    rest, _ = _rows(M.input_fn(files, output, 5, shuffle=False, repeat=False, raw=True,
                               holdout=0.5, take="rest"))
    assert 0 < len(ints) < len(ROWS) * 8 and len(ints) + len(rest) == len(ROWS) * 8
    np.testing.assert_array_equal(ints, held_ints)
    np.testing.assert_allclose(floats, held_floats, rtol=1e-5, atol=1e-6)  # batch-dependent


def test_the_refit_counts_every_row_of_every_pattern(transform_dir):
    raw = str(transform_dir / "raw" / "*")
    steps, record = M.refit_steps([raw, raw, str(transform_dir / "nothing-*")], 100)
    assert record["rows"] == {"recipe": len(ROWS) * 8, "added": len(ROWS) * 8,
                              "all": len(ROWS) * 16}
    assert steps == 200


def test_raw_rows_are_told_apart_from_written_rows(transform_dir, tmp_path):
    assert M.examples_are_raw([str(transform_dir / "raw" / "part-00000.gz")])
    assert not M.examples_are_raw(sorted(map(str, (transform_dir / "examples").glob("*"))))
    empty = tmp_path / "empty.gz"
    tf.io.TFRecordWriter(str(empty), "GZIP").close()
    with pytest.raises(ValueError, match="no examples in 1 file"):
        M.examples_are_raw([str(empty)])


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
    # ROWS[4] has community area 99, outside the schema's domain: the contract refuses it.
    rows = ROWS[:4] + [raw_row(company=None, trip_seconds=None, dropoff_latitude=None)]
    # Rows as a REST client sends them: first value of each feature, absent ones as None.
    raw = M.raw_inputs([{k: v[0] if v else None for k, v in r.items()} for r in rows])
    by_raw = exported.signatures["serving_default"](**raw)[M.PROBABILITY].numpy()
    by_example = exported.signatures["serving_examples"](
        examples=_serialized(rows))[M.PROBABILITY].numpy()
    assert by_raw.shape == (len(rows),)
    assert np.all((by_raw >= 0) & (by_raw <= 1))
    np.testing.assert_allclose(by_raw, by_example, atol=1e-6)


def _with(raw: dict, name: str, value) -> dict:
    """The raw tensors of a valid request with one value replaced, as a TF Serving client
    could send it (no models/contract.py on the way)."""
    column = raw[name].numpy().tolist()
    column[0] = value
    return {**raw, name: tf.constant(column, raw[name].dtype)}


@pytest.mark.parametrize("name, value, message", [
    ("fare", float("nan"), "fare is required"),
    ("payment_type", b"", "payment_type is required"),
    ("fare", float("inf"), "fare is required and must be a finite"),
    ("trip_seconds", float("-inf"), "trip_seconds must be a finite 32-bit float"),
    ("trip_seconds", 1e308, "trip_seconds must be a finite 32-bit float"),
])
def test_the_exported_graph_refuses_what_the_contract_refuses(exported, name, value, message):
    raw = M.raw_inputs([{k: v[0] if v else None for k, v in r.items()} for r in ROWS[:2]])
    serve = exported.signatures["serving_default"]
    assert np.isfinite(serve(**raw)[M.PROBABILITY].numpy()).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(**_with(raw, name, value))


def test_an_absent_optional_number_is_scored_as_absent(exported):
    rows = [{k: v[0] if v else None for k, v in r.items()} for r in ROWS[:1]]
    raw = M.raw_inputs(rows)
    serve = exported.signatures["serving_default"]
    as_nan = serve(**_with(raw, "trip_seconds", float("nan")))[M.PROBABILITY].numpy()
    left_out = serve(**M.raw_inputs([{**rows[0], "trip_seconds": None}]))[M.PROBABILITY]
    np.testing.assert_allclose(as_nan, left_out.numpy(), atol=1e-7)


def test_transform_features_signature_matches_the_model_inputs(exported):
    out = exported.signatures["transform_features"](examples=_serialized(ROWS, with_label=True))
    assert set(M.model_input_names()) | {F.LABEL_XF} <= set(out)
    assert out[F.LABEL_XF].numpy().tolist() == [1, 0, 0, 1, 0]


def test_recency_weights_halve_per_half_life_and_average_one():
    assert M.recency_weights(3, 0) == [1.0, 1.0, 1.0]
    w = M.recency_weights(3, 1.0)
    assert w[2] / w[1] == pytest.approx(2) and w[1] / w[0] == pytest.approx(2)
    assert sum(w) / 3 == pytest.approx(1.0)


def test_input_fn_gives_each_pattern_its_weight(transform_dir):
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    pattern = str(transform_dir / "examples" / "*")
    data = M.input_fn([pattern, pattern], tf_transform_output, 8, shuffle=False, repeat=False,
                      weights=[0.5, 1.5])
    weights = np.concatenate([w.numpy() for _, _, w in data])
    assert len(weights) == 2 * len(ROWS) * 8
    assert sorted(set(weights.tolist())) == [0.5, 1.5]
    assert (weights == 0.5).sum() == (weights == 1.5).sum()


def _copy_with_vocabulary(src, dest, feature, vocabulary):
    import shutil

    shutil.copytree(src, dest)
    (dest / "assets" / feature).write_text("".join(f"{t}\n" for t in vocabulary))
    return str(dest)


def test_warm_start_makes_the_new_model_predict_as_the_base_model(
        exported_models, transform_dir, tmp_path):
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    raw = M.raw_inputs([{k: v[0] if v else None for k, v in r.items()} for r in ROWS[:4]])
    base = tf.saved_model.load(exported_models[1]).signatures["serving_default"]
    tf.keras.utils.set_random_seed(99)
    model = M.build_model(M.hparams())

    def predictions(name):
        M.export(model, tf_transform_output, str(tmp_path / name))
        signature = tf.saved_model.load(str(tmp_path / name)).signatures["serving_default"]
        return signature(**raw)[M.PROBABILITY].numpy()

    cold = predictions("cold")
    M.warm_start(model, exported_models[1], tf_transform_output)
    warm = predictions("warm")
    expected = base(**raw)[M.PROBABILITY].numpy()
    assert not np.allclose(cold, expected, atol=1e-4)  # initial weights did change ...
    np.testing.assert_allclose(warm, expected, atol=1e-6)  # ... to the base model's


def test_warm_start_remaps_vocabulary_embeddings_token_by_token(
        exported_models, transform_dir, tmp_path):
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    base = _weights_of(exported_models[1])
    old = base["payment_type_xf_embedding/embeddings:0"]
    # The base model saw another vocabulary order for payment_type: its first token is the
    # new vocabulary's second; a token the new vocabulary does not hold is dropped.
    new_vocab = _vocabulary_of(tf_transform_output, "payment_type")
    old_vocab = [new_vocab[1], "Bitcoin", new_vocab[0]] + new_vocab[2:]
    base_dir = _copy_with_vocabulary(exported_models[1], tmp_path / "base", "payment_type",
                                     old_vocab)
    model = M.build_model(M.hparams())
    fresh = model.get_layer("payment_type_xf_embedding").get_weights()[0]

    carried = M.warm_start(model, base_dir, tf_transform_output)

    rows = model.get_layer("payment_type_xf_embedding").get_weights()[0]
    np.testing.assert_array_equal(rows[0], old[2])  # token moved from index 2 to 0
    np.testing.assert_array_equal(rows[1], old[0])  # and from 0 to 1
    n = len(new_vocab)
    np.testing.assert_array_equal(rows[2:n], old[3:n + 1])
    # OOV buckets follow each vocabulary (2 of them for payment_type); the rest is unused.
    np.testing.assert_array_equal(rows[n:n + 2], old[n + 1:n + 3])
    np.testing.assert_array_equal(rows[n + 2:], fresh[n + 2:])
    assert carried["payment_type"] == len(new_vocab)
    companies = len(_vocabulary_of(tf_transform_output, "company"))  # same vocabulary
    np.testing.assert_array_equal(
        model.get_layer("company_xf_embedding").get_weights()[0][:companies],
        base["company_xf_embedding/embeddings:0"][:companies])


def test_warm_start_refuses_a_base_model_of_another_shape(exported_models, transform_dir):
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    model = M.build_model(M.hparams({"hidden_units": "64"}))
    with pytest.raises(ValueError, match="does not match"):
        M.warm_start(model, exported_models[0], tf_transform_output)


def _weights_of(export_dir) -> dict[str, np.ndarray]:
    """An export's model weights by variable name, read by TensorFlow's checkpoint restore
    (the export keeps variables, not Keras's layer traces)."""
    model = M.build_model(M.hparams())
    tf.train.Checkpoint(model=model).read(
        os.path.join(export_dir, "variables", "variables")
    ).expect_partial().assert_existing_objects_matched()
    return {v.name: v.numpy() for v in model.variables}


def _vocabulary_of(tf_transform_output, name):
    return [t.decode() if isinstance(t, bytes) else t
            for t in tf_transform_output.vocabulary_by_name(name)]
