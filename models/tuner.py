"""tuner_fn: a KerasTuner search over the model's hyperparameters, for TFX's Tuner.

KerasTuner 1.4 imports `keras` (Keras 3) whatever TF_USE_LEGACY_KERAS says, so its default
trial loop (which hands Keras 3 callbacks to `fit`) would mix the two Kerases. Here each
trial builds and fits the tf.keras (Keras 2) model itself and only reports the objective;
KerasTuner keeps the search state and picks the best hyperparameters, which the Trainer
then reads from the Tuner's `best_hyperparameters` output.
"""

from __future__ import annotations

import os
from typing import Any

import keras_tuner
import tensorflow_transform as tft
from tfx.components.tuner.component import TunerFnResult

import models  # noqa: F401  (Keras 2 before TensorFlow)
from models import model as M
from models import problem as P

OBJECTIVE = "val_auc"  # the binary task's; objective() gives each task's
SEARCHED = ("learning_rate", "hidden_units", "dropout", "embedding_scale", "l2")


def search_space(fixed: dict[str, Any] | None = None) -> keras_tuner.HyperParameters:
    """The space searched; names match models.model.DEFAULT_HPARAMS."""
    hp = keras_tuner.HyperParameters()
    hp.Choice("learning_rate", [0.001, 0.003, 0.01])
    hp.Choice("hidden_units", ["64,32", "128,64", "256,128", "256,128,64"])
    hp.Choice("dropout", [0.0, 0.1, 0.2])
    hp.Choice("embedding_scale", [0.5, 1.0, 2.0])
    hp.Choice("l2", [0.0, 0.0003, 0.001, 0.003])
    for name, value in (fixed or {}).items():
        hp.Fixed(name, value)
    return hp


class TrialTrainer(keras_tuner.Tuner):
    """Trains one candidate per trial with the Trainer's own input and model code."""

    def run_trial(self, trial, tf_transform_output, train_files, eval_files,  # noqa: D102
                  steps: int, eval_steps: int, seed: int | None = None,
                  raw_examples: bool | None = None, **_):
        hp = M.hparams({k: v for k, v in trial.hyperparameters.values.items()
                        if k in M.DEFAULT_HPARAMS})
        _, history = M.fit(hp, tf_transform_output, train_files, eval_files, steps=steps,
                           eval_steps=eval_steps, rounds=5, seed=seed, verbose=0,
                           raw_examples=raw_examples)
        name, higher = objective()
        values = history.history[name]
        return {name: max(values) if higher else min(values)}

    def save_model(self, trial_id, model, step=0):  # noqa: D102 - models are not kept
        pass


def objective() -> tuple[str, bool]:
    """The validation metric trials are judged by, for the active problem's task."""
    metric, higher = M.OBJECTIVE[P.current().task]
    return f"val_{metric}", higher


def tuner_fn(fn_args) -> TunerFnResult:
    custom = dict(fn_args.custom_config or {})
    P.from_custom_config(custom)
    seed = custom.get("seed")
    name, higher = objective()
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective(name, "max" if higher else "min"),
        max_trials=int(custom.get("trials", 6)),
        hyperparameters=search_space({k: v for k, v in (custom.get("hparams") or {}).items()
                                      if k not in SEARCHED}),
        seed=seed,
    )
    # One directory per tuner process: TFX's Vertex Tuner runs every replica of a parallel
    # search in /tmp, and replicas sharing a machine (offline) must not overwrite each other.
    directory = os.path.join(fn_args.working_dir, os.environ.get("KERASTUNER_TUNER_ID", "local"))
    tuner = TrialTrainer(oracle=oracle, directory=directory, project_name="search",
                         overwrite=True)
    return TunerFnResult(
        tuner=tuner,
        fit_kwargs={
            "tf_transform_output": tft.TFTransformOutput(fn_args.transform_graph_path),
            "train_files": fn_args.train_files,
            "eval_files": fn_args.eval_files,
            "steps": fn_args.train_steps,
            "eval_steps": fn_args.eval_steps,
            "seed": seed,
            "raw_examples": bool(custom.get("raw_examples")),
        },
    )
