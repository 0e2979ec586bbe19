"""tuner_fn runs a real (tiny) KerasTuner search with the project's Keras 2 model."""

from types import SimpleNamespace

import tensorflow as tf

from models import model as M
from models import tuner as T


def fn_args(transform_dir, working_dir, **custom):
    files = [str(transform_dir / "examples" / "*")]
    return SimpleNamespace(
        working_dir=str(working_dir), transform_graph_path=str(transform_dir / "graph"),
        train_files=files, eval_files=files, train_steps=4, eval_steps=1,
        custom_config={"trials": 2, "seed": 3, "hparams": {"batch_size": 16}, **custom})


def test_search_finds_best_hyperparameters_the_trainer_understands(transform_dir, tmp_path):
    result = T.tuner_fn(fn_args(transform_dir, tmp_path))
    result.tuner.search(**result.fit_kwargs)
    trials = result.tuner.oracle.get_best_trials(num_trials=10)
    assert len(trials) == 2
    assert all(0.0 <= t.score <= 1.0 for t in trials)
    best = result.tuner.get_best_hyperparameters()[0]
    assert best.values["batch_size"] == 16  # configured values are fixed, not searched
    # What TFX's Tuner writes (HyperParameters.get_config()) is what run_fn reads back.
    hp = M._hparams_from(SimpleNamespace(custom_config={}, hyperparameters=best.get_config()))
    assert hp["hidden_units"] == best.values["hidden_units"]
    assert isinstance(M.build_model(hp), tf.keras.Model)  # Keras 2, not Keras 3


def test_keras_tuner_itself_is_on_keras_3_which_is_why_trials_build_their_own_model():
    import keras_tuner.src.backend.config as kt_config

    assert kt_config.multi_backend()  # KerasTuner ignores TF_USE_LEGACY_KERAS
    assert tf.keras.__name__.startswith("tf_keras")
