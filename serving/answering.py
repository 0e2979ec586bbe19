"""Which version answers: one rule for the local server, the router and the stream, decided
from one immutable snapshot of the rollout state per request (or per bundle of events).

In order: a pause decides first (its fallback version, a constant, or a refusal); then an
explicit `/versions/N` or `/labels/L`; then, for unversioned traffic, the bandit's weights,
else the canary's fraction, else `stable`, else the newest version available. A snapshot is
read whole (rollout.json, the bandit's weights) and replaced whole, never updated field by
field, so one request never sees half of a change.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from serving import model_config
from serving import pause as pause_mod


class NoVersion(LookupError):
    """Nothing the request names is being served (HTTP 404 with this message)."""


@dataclass(frozen=True)
class Snapshot:
    """The rollout state one decision reads: read whole, never mutated."""

    labels: Mapping[str, int] = field(default_factory=dict)  # stable, canary
    canary_fraction: float = 0.0
    bandit: Mapping[int, float] = field(default_factory=dict)  # version -> traffic share
    pause: pause_mod.Pause | None = None
    versions: tuple[int, ...] = ()  # what the rollout keeps loaded (empty: no rollout)

    @classmethod
    def read(cls, config_dir: str | Path | None, required: bool = False) -> Snapshot:
        """The state serving.rollout keeps in `config_dir`; an absent folder is no rollout
        (the newest version answers), or with `required` an error: a control folder that
        was named and cannot be read must not read as "not paused"."""
        if not config_dir:
            return cls()
        folder = str(config_dir)
        if "://" not in folder and not Path(folder).is_dir():
            if required:
                raise FileNotFoundError(f"no rollout state folder at {folder}: give the "
                                        "folder serving.rollout writes (--config-dir)")
            return cls()
        rollout = model_config.load_state(folder)
        weights: dict[int, float] = {}
        if rollout.bandit:
            from serving import bandit

            running = bandit.BanditStore(folder).load() if "://" not in folder else None
            weights = dict(running.weights) if running else {}
        labels = rollout.labels()
        return cls(labels=labels,
                   canary_fraction=rollout.canary_fraction if "canary" in labels else 0.0,
                   bandit=weights, pause=pause_mod.from_dict(rollout.pause),
                   versions=tuple(rollout.versions))


@dataclass(frozen=True)
class Answer:
    """Who answers: a `version` (None: no model: a constant or a refusal) and how it was
    chosen (`route`: stable, canary, bandit, latest, version:N, a label, or N;paused)."""

    version: int | None
    route: str
    constant: float | None = None
    refusal: str | None = None

    @property
    def paused(self) -> bool:
        return self.route.endswith(";paused")


def choose(snapshot: Snapshot, available: Collection[int], rng: random.Random,
           version: str | int | None = None, label: str | None = None) -> Answer:
    """The answer to one request (or bundle) under `snapshot`, among the `available`
    (loaded) versions. Raises NoVersion when nothing the request names is served."""
    paused = snapshot.pause
    if paused is not None:
        if paused.fallback == "constant":
            return Answer(None, paused.route(), constant=paused.constant)
        if paused.fallback == "refuse":
            return Answer(None, paused.route(), refusal=paused.refusal())
        if paused.version not in available:
            return Answer(None, paused.route(), refusal=(
                f"serving is paused and its fallback, version {paused.version}, is not "
                f"loaded (yet); loaded: {sorted(available)}"))
        return Answer(paused.version, paused.route())
    if version is not None:
        text = str(version)
        if not text.isdigit() or int(text) not in available:
            raise NoVersion(f"version {text} is not being served; available: "
                            f"{sorted(available)}")
        return Answer(int(text), f"version:{text}")
    if label is not None:
        if label not in snapshot.labels or snapshot.labels[label] not in available:
            raise NoVersion(f"label {label!r} is not assigned to a served version; labels: "
                            f"{dict(snapshot.labels) or 'none'}")
        return Answer(snapshot.labels[label], label)
    if not available:
        raise NoVersion("no servable version")
    from serving import bandit

    chosen, route = bandit.pick_version(dict(snapshot.labels), snapshot.canary_fraction,
                                        dict(snapshot.bandit), available, rng)
    if chosen not in available:  # a label on a version not loaded (yet): the newest answers
        chosen, route = max(available), "latest"
    return Answer(chosen, route)
