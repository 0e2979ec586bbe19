"""One configuration object for every component, with profiles, env and CLI overrides.

Precedence, lowest first: field defaults < profile < environment (TAXI_<FIELD>, e.g.
TAXI_TRAIN_STEPS=500) < command-line flags (--train-steps 500). Runners call
`add_arguments` and `from_args`; the notebook and tests call `load(...)` directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "TAXI_"


RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")


def setting(default: Any, help_text: str) -> Any:
    """A config field with its --help text (mutable defaults get a factory)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class PipelineConfig:
    """Everything a run needs. Paths may be local directories or gs:// URIs."""

    profile: str = setting("local", "settings profile: local")
    pipeline_name: str = setting("taxi-big-tipper", "pipeline name in MLMD")
    data_root: str = setting(str(PROJECT_ROOT / "data" / "raw" / "chicago_taxi"),
                             "directory of CSV files ExampleGen reads")
    output_root: str = setting(str(PROJECT_ROOT / "outputs"),
                               "parent of pipeline root, metadata and serving dir")
    pipeline_root: str = setting("", "artifacts (default OUTPUT_ROOT/pipelines/NAME)")
    metadata_path: str = setting("", "MLMD SQLite file (default OUTPUT_ROOT/metadata/NAME.db)")
    serving_dir: str = setting("", "versioned dir TF Serving watches "
                                   "(default OUTPUT_ROOT/serving/NAME)")
    schema_dir: str = setting(str(PROJECT_ROOT / "schema"), "curated schema directory")

    # ExampleGen
    train_buckets: int = setting(3, "hash buckets for the train split")
    eval_buckets: int = setting(1, "hash buckets for the eval split")
    partition_feature: str = setting("", "split by this column's hash so related rows "
                                         "stay on one side")

    # Tuner / Trainer
    enable_tuning: bool = setting(False, "run the KerasTuner search before training")
    tuner_trials: int = setting(6, "tuner trials")
    tuner_steps: int = setting(400, "training steps per tuner trial")
    train_steps: int = setting(500, "Trainer steps")
    eval_steps: int = setting(20, "validation batches per round during training")
    hparams: dict = setting({}, "JSON of hyperparameter overrides, "
                                "e.g. '{\"learning_rate\": 0.001}'")
    seed: int = setting(42, "random seed for training")

    # Evaluator
    min_auc: float = setting(0.90, "blessing needs eval AUC >= this")
    max_auc_drop: float = setting(0.01, "blessing needs AUC >= baseline AUC - this")
    slices: tuple = setting(("payment_type", "trip_start_hour"), "comma-separated slice features")

    # Beam
    beam_direct_running_mode: str = setting("in_memory", "|".join(RUNNING_MODES))
    beam_num_workers: int = setting(0, "Beam direct workers (0 = one per core)")
    enable_cache: bool = setting(True, "reuse results of unchanged components")

    def __post_init__(self) -> None:
        # Local paths are made absolute: they are recorded in MLMD as execution properties,
        # and `outputs` vs `/abs/outputs` must not look like a change (it would bust the cache).
        for name in ("data_root", "output_root", "pipeline_root", "metadata_path",
                     "serving_dir", "schema_dir"):
            value = getattr(self, name)
            if value and "://" not in value:
                setattr(self, name, os.path.abspath(value))
        out = self.output_root.rstrip("/")
        self.pipeline_root = self.pipeline_root or f"{out}/pipelines/{self.pipeline_name}"
        self.metadata_path = self.metadata_path or f"{out}/metadata/{self.pipeline_name}.db"
        self.serving_dir = self.serving_dir or f"{out}/serving/{self.pipeline_name}"
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.train_buckets < 1 or self.eval_buckets < 1:
            problems.append("train_buckets and eval_buckets must be >= 1")
        if self.train_steps < 1:
            problems.append("train_steps must be >= 1")
        if not 0.0 <= self.min_auc <= 1.0:
            problems.append("min_auc must be in [0, 1]")
        if self.max_auc_drop < 0:
            problems.append("max_auc_drop must be >= 0")
        if self.beam_direct_running_mode not in RUNNING_MODES:
            problems.append(f"beam_direct_running_mode must be one of {', '.join(RUNNING_MODES)}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def beam_pipeline_args(self) -> list[str]:
        # in_memory runs on one worker; asking it for more only earns a Beam warning.
        workers = 1 if self.beam_direct_running_mode == "in_memory" else self.beam_num_workers
        return [
            "--runner=DirectRunner",
            f"--direct_running_mode={self.beam_direct_running_mode}",
            f"--direct_num_workers={workers}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


PROFILES: dict[str, dict[str, Any]] = {
    "local": {},
}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(PipelineConfig)


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is dict:
            value = json.loads(raw) if raw.strip() else {}
            if not isinstance(value, dict):
                raise ValueError(raw)
            return value
        if kind is tuple:
            return tuple(s.strip() for s in raw.split(",") if s.strip())
    except ValueError as e:
        raise ConfigError(f"{name}: cannot read {raw!r} as {kind.__name__}") from e
    return raw


def load(
    profile: str = "local", env: Mapping[str, str] | None = None, **overrides: Any
) -> PipelineConfig:
    """Profile, then TAXI_* environment variables, then keyword overrides."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    env = os.environ if env is None else env
    types = _field_types()
    values: dict[str, Any] = {"profile": profile, **PROFILES[profile]}
    for name, kind in types.items():
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _coerce(key, env[key], kind)
    for name, value in overrides.items():
        if name not in types:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, value, types[name])
    return PipelineConfig(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per field; unset flags leave the profile/env value in place."""
    group = parser.add_argument_group("pipeline settings (also TAXI_<NAME> environment variables)")
    for f in dataclasses.fields(PipelineConfig):
        if f.name == "profile":  # chosen by the runner, which knows its own profiles
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _field_types()[f.name]
        help_text = f.metadata.get("help", "")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                               help=f"{help_text} (default: {_default_text(f)})")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return ",".join(f.default) if isinstance(f.default, tuple) else str(f.default) or "derived"
    return "{}"


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> PipelineConfig:
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(PipelineConfig)
        if f.name != "profile" and getattr(args, f.name, None) is not None
    }
    return load(getattr(args, "profile", None) or "local", env=env, **overrides)
