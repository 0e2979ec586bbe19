"""The settings machinery every command shares: dataclass fields that carry their --help
text, read from a profile, TAXI_<NAME> environment variables and --flags.

Precedence, lowest first: field defaults < profile < environment (TAXI_<FIELD>, e.g.
TAXI_TRAIN_STEPS=500) < command-line flags (--train-steps 500). A command declares the
settings class it uses (a subclass of `Settings`), so its --help lists those fields and no
others; runners call `add_arguments` and `from_args`, the notebook and tests `load(...)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

ENV_PREFIX = "TAXI_"

S = TypeVar("S", bound="Settings")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it and how to set it."""


def setting(default: Any, help_text: str) -> Any:
    """A settings field with its --help text (mutable defaults get a factory)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


def how_to_set(name: str) -> str:
    """The flag and the variable that set field `name`, for error messages."""
    return f"--{name.replace('_', '-')} or {ENV_PREFIX}{name.upper()}"


@dataclass
class Settings:
    """Base of every settings class: profiles, environment, flags and validation."""

    # profile name -> field values; a profile may name fields a subclass does not have.
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"local": {}}
    # Titles of profiles whose problems are listed one per line (the cloud ones).
    PROFILE_TITLES: ClassVar[dict[str, str]] = {}
    # field name -> title of the --help group that starts at it.
    SECTIONS: ClassVar[dict[str, str]] = {}

    profile: str = setting("local", "settings profile")

    def __post_init__(self) -> None:
        self.derive()
        self.validate()

    def derive(self) -> None:
        """Fill the settings that default to others (subclasses extend it)."""

    def problems(self) -> list[str]:
        """Everything wrong with these settings, each naming its flag and variable."""
        return []

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            title = self.PROFILE_TITLES.get(self.profile)
            raise ConfigError("; ".join(problems) if not title else
                              f"{title} settings missing or invalid:\n  - "
                              + "\n  - ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def load(cls: type[S], profile: str = "local", env: Mapping[str, str] | None = None,
             **overrides: Any) -> S:
        """Profile, then TAXI_* environment variables, then keyword overrides."""
        if profile not in cls.PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(cls.PROFILES)}")
        env = os.environ if env is None else env
        types = cls.field_types()
        values: dict[str, Any] = {"profile": profile}
        values.update({k: v for k, v in cls.PROFILES[profile].items() if k in types})
        for name, kind in types.items():
            key = ENV_PREFIX + name.upper()
            if key in env:
                values[name] = _coerce(key, env[key], kind)
        for name, value in overrides.items():
            if name not in types:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _coerce(name, value, types[name])
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, title: str = "settings",
                      hidden: Collection[str] = ()) -> None:
        """One --flag per field, grouped by SECTIONS; unset flags leave the profile/env value
        in place. `hidden` fields are accepted but left out of --help (settings this
        command does not use)."""
        group = parser.add_argument_group(
            f"{title} (also {ENV_PREFIX}<NAME> environment variables)")
        types = cls.field_types()
        for f in dataclasses.fields(cls):
            if f.name == "profile":  # chosen by the command, which knows its own profiles
                continue
            if f.name in cls.SECTIONS:
                group = parser.add_argument_group(f"{title}: {cls.SECTIONS[f.name]}")
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "")
            if f.name in hidden:
                group.add_argument(flag, dest=f.name, default=None, help=argparse.SUPPRESS,
                                   **({"action": argparse.BooleanOptionalAction}
                                      if types[f.name] is bool else {}))
                continue
            if types[f.name] is bool:
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            else:
                group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                                   help=f"{help_text} (default: {_default_text(f)})")

    @classmethod
    def from_args(cls: type[S], args: argparse.Namespace,
                  env: Mapping[str, str] | None = None) -> S:
        overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                     if f.name != "profile" and getattr(args, f.name, None) is not None}
        return cls.load(getattr(args, "profile", None) or "local", env=env, **overrides)


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return ",".join(f.default) if isinstance(f.default, tuple) else str(f.default) or "derived"
    return "{}"


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
