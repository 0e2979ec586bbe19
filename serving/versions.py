"""Which model versions are pushed: numeric directories under the Pusher's base directory that
hold a SavedModel, the layout TF Serving's --model_base_path expects. One rule for the Pusher
(it declines to push a copy of the newest version), the served-model baseline, rollouts, the
servers, batch predictions and the run report; a half-copied directory is not a version.
"""

from __future__ import annotations

import os
from pathlib import Path

SAVED_MODEL_FILE = "saved_model.pb"


def _is_remote(path: str) -> bool:
    return "://" in path


def _children(base: str) -> list[str]:
    if _is_remote(base):
        import tensorflow as tf  # gs:// and other file systems TensorFlow reads

        if not tf.io.gfile.isdir(base):
            return []
        return [name.rstrip("/") for name in tf.io.gfile.listdir(base)]
    return [p.name for p in Path(base).iterdir()] if Path(base).is_dir() else []


def _exists(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.isfile(path)


def pushed_versions(base_path: str | Path) -> list[int]:
    """Version numbers under `base_path` (local or a URI) that hold a SavedModel, oldest
    first."""
    base = str(base_path)
    return sorted(int(name) for name in _children(base)
                  if name.isdigit() and _exists(f"{base.rstrip('/')}/{name}/{SAVED_MODEL_FILE}"))


def newest_version(base_path: str | Path) -> int | None:
    versions = pushed_versions(base_path)
    return versions[-1] if versions else None


def version_dir(base_path: str | Path, version: int) -> str:
    return f"{str(base_path).rstrip('/')}/{version}"


def version_of(model_dir: str | Path) -> int | None:
    """The version a SavedModel directory is, by its name (None for any other directory)."""
    name = Path(str(model_dir).rstrip("/")).resolve().name if not _is_remote(str(model_dir)) \
        else str(model_dir).rstrip("/").rsplit("/", 1)[-1]
    return int(name) if name.isdigit() else None
