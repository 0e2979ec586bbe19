"""Imported by pytest before any test module: selects Keras 2 before TensorFlow is imported.

Also the fixtures several folders share: a real Transform output of a few rows, and real
exported SavedModels trained on it (the serving tests serve them).
"""

import pytest

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 and quiets TensorFlow's C++ logs)


def write_transform(root, rows: list[dict]):
    """A Transform output dir and gzipped transformed records of `rows` (tf.Transform
    instance dicts), as the Transform component writes them."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from models import features as F
    from models.preprocessing import preprocessing_fn

    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(F.raw_feature_spec("TRAINING")))
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tmp")):
        raw = pipeline | beam.Create(rows)
        (transformed, out_meta), transform_fn = (raw, metadata) | \
            tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "graph"))
        coder = tft.coders.ExampleProtoCoder(out_meta.dataset_metadata.schema)
        _ = (transformed | beam.Map(coder.encode) | beam.io.WriteToTFRecord(
            str(root / "examples" / "part"), file_name_suffix=".gz"))
    # The Transform component also records the raw schema beside the graph.
    raw_metadata_dir = root / "graph" / tft.TFTransformOutput.RAW_METADATA_DIR
    metadata_io.write_metadata(metadata, str(raw_metadata_dir))
    return root


@pytest.fixture(scope="session")
def transform_dir(tmp_path_factory):
    """A Transform output of a few hand-written rows."""
    from models.preprocessing_test import ROWS

    return write_transform(tmp_path_factory.mktemp("transform"), ROWS * 8)


def bundled_rows(count: int) -> list[dict[str, str]]:
    """The first `count` rows of the bundled CSV, as csv.DictReader reads them."""
    import csv
    import itertools

    from data import bundled

    with bundled.materialize().open(newline="") as f:
        return list(itertools.islice(csv.DictReader(f), count))


def instance(row: dict[str, str]) -> dict:
    """A CSV row as a tf.Transform instance dict typed by the training feature spec."""
    import tensorflow as tf

    from models import features as F

    out = {}
    for name, spec in F.raw_feature_spec("TRAINING").items():
        value = row.get(name, "")
        if value == "":
            out[name] = []
        elif spec.dtype == tf.string:
            out[name] = [value.encode()]
        elif spec.dtype == tf.int64:
            out[name] = [int(float(value))]
        else:
            out[name] = [float(value)]
    return out


@pytest.fixture(scope="session")
def bundled_transform(tmp_path_factory):
    """(Transform output dir, held-out raw CSV rows): 2,400 bundled rows transformed, the
    600 after them kept raw to score exported models the way a client calls them."""
    rows = bundled_rows(3000)
    root = write_transform(tmp_path_factory.mktemp("bundled_transform"),
                           [instance(r) for r in rows[:2400]])
    return root, rows[2400:]


def train_and_export(transform_dir, path, steps: int, seed: int) -> str:
    """A real model with the real Transform graph in its signatures, trained a few steps."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import model as M

    tf.keras.utils.set_random_seed(seed)
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    hp = M.hparams({"batch_size": 16})
    model = M.build_model(hp)
    data = M.input_fn([str(transform_dir / "examples" / "*")], tf_transform_output, 16, seed=seed)
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    M.export(model, tf_transform_output, str(path))
    return str(path)


@pytest.fixture(scope="session")
def exported_models(transform_dir, tmp_path_factory):
    """Two different SavedModels (as the Pusher would push them as versions 1 and 2)."""
    root = tmp_path_factory.mktemp("exported")
    return [train_and_export(transform_dir, root / "a", steps=3, seed=1),
            train_and_export(transform_dir, root / "b", steps=6, seed=2)]
