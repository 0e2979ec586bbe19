"""Imported by pytest before any test module: selects Keras 2 before TensorFlow is imported.

Also the fixtures several folders share: a real Transform output of a few rows, and real
exported SavedModels trained on it (the serving tests serve them).
"""

import pytest

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 and quiets TensorFlow's C++ logs)
from models.sample_transform import bundled_rows, instance, write_transform


@pytest.fixture(scope="session")
def transform_dir(tmp_path_factory):
    """A Transform output of a few hand-written rows."""
    from models.preprocessing_test import ROWS

    return write_transform(tmp_path_factory.mktemp("transform"), ROWS * 8)


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
