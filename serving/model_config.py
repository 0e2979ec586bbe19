"""TF Serving's models.config, and the rollout state (stable, canary, traffic) behind it.

TF Serving reads `--model_config_file` (a ModelServerConfig text proto) and re-reads it
every `--model_config_file_poll_wait_seconds`. The project writes it from a small state
kept beside it (`rollout.json`): which version is `stable`, which is `canary` and what
fraction of traffic the canary gets. TF Serving itself never splits traffic; the local
server (serving/server.py) does, and so can any router in front of TF Serving.

Version policy: with no labels, `latest {num_versions: 1}` (TF Serving's default, which
serves each pushed version as it lands); once a version is labelled, `specific` versions:
exactly stable and canary, so a rolled-back version is unloaded and not served by accident.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

CONFIG_FILE = "models.config"
STATE_FILE = "rollout.json"


class RolloutError(ValueError):
    """A rollout command that cannot be carried out; the message says why and what to do."""


@dataclasses.dataclass
class Rollout:
    stable: int | None = None
    canary: int | None = None
    canary_fraction: float = 0.0
    history: list[dict] = dataclasses.field(default_factory=list)  # every change, newest last
    bandit: list[int] = dataclasses.field(default_factory=list)  # arms of a running bandit
    pause: dict = dataclasses.field(default_factory=dict)  # serving/pause.py, while paused

    @property
    def versions(self) -> list[int]:
        """Every version that must stay loaded: labelled, bandit arms, a pause's fallback."""
        fallback = self.pause.get("version") if self.pause else None
        return sorted({v for v in (self.stable, self.canary, *self.bandit, fallback)
                       if v is not None})

    def labels(self) -> dict[str, int]:
        found = {"stable": self.stable, "canary": self.canary}
        return {label: v for label, v in found.items() if v is not None}


def load_state(config_dir: str | Path) -> Rollout:
    """The rollout state in `config_dir` (local or gs://, where a Dataflow job reads it);
    none written yet is no rollout."""
    if "://" in str(config_dir):
        import tensorflow as tf

        remote = f"{str(config_dir).rstrip('/')}/{STATE_FILE}"
        if not tf.io.gfile.exists(remote):
            return Rollout()
        data = json.loads(tf.io.gfile.GFile(remote).read())
        return Rollout(**{f.name: data[f.name] for f in dataclasses.fields(Rollout)
                          if f.name in data})
    path = Path(config_dir) / STATE_FILE
    if not path.is_file():
        return Rollout()
    data = json.loads(path.read_text())
    return Rollout(**{f.name: data[f.name] for f in dataclasses.fields(Rollout)
                      if f.name in data})


def model_server_config(model_name: str, base_path: str,
                        rollout: Rollout) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    if rollout.versions:
        model.model_version_policy.specific.versions.extend(rollout.versions)
        for label, version in rollout.labels().items():
            model.version_labels[label] = version
    else:
        model.model_version_policy.latest.num_versions = 1
    return config


def read_config(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(Path(path).read_text(), config)
    return config


def _atomic_write(path: Path, text: str) -> None:
    """Write-then-rename: a server polling the file never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write(config_dir: str | Path, model_name: str, base_path: str, rollout: Rollout) -> Path:
    """Writes models.config (what TF Serving reads) and rollout.json (what it came from)."""
    config_dir = Path(config_dir)
    config = model_server_config(model_name, base_path, rollout)
    _atomic_write(config_dir / STATE_FILE, json.dumps(dataclasses.asdict(rollout), indent=2))
    _atomic_write(config_dir / CONFIG_FILE, text_format.MessageToString(config))
    return config_dir / CONFIG_FILE
