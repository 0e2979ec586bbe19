"""Imported by pytest before any test module: selects Keras 2 before TensorFlow is imported.

Also the fixtures several folders share: a real Transform output of a few rows, and real
exported SavedModels trained on it (the serving tests serve them).
"""

import pytest

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 and quiets TensorFlow's C++ logs)


@pytest.fixture(scope="session")
def transform_dir(tmp_path_factory):
    """A Transform output dir and gzipped transformed records, as the Transform component writes."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from models import features as F
    from models.preprocessing import preprocessing_fn
    from models.preprocessing_test import ROWS

    root = tmp_path_factory.mktemp("transform")
    rows = ROWS * 8  # enough for a couple of batches
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
