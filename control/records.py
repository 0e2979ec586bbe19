"""The audit log: one record per human action, each a file of its own under the control
folder (`OUTPUT_ROOT/control/log/`), never rewritten or deleted.

A file per record, and not lines appended to one file, because the same log must work on a
local disk and on gs://, whose objects cannot be appended to; file names start with the UTC
time, so a listing is the log in order. Undoing an action (resume, removing a mark,
rejecting after an approval) is a new record. Who acted comes from `--by`, else the
TAXI_OPERATOR environment variable, else the login name and host; never a secret.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

OPERATOR_ENV = "TAXI_OPERATOR"
LOG_DIR = "log"


@dataclass(frozen=True)
class Record:
    action: str  # pause, resume, mark, unmark, approve, reject, rollback, promote, ...
    who: str
    reason: str
    time: str  # UTC, ISO 8601
    id: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return datetime.datetime.fromisoformat(self.time).timestamp()

    def line(self) -> str:
        """One line a person reads: when, who, what, why."""
        what = ", ".join(f"{k}={v}" for k, v in self.details.items() if v not in (None, "", {}))
        return (f"{self.time[:19].replace('T', ' ')}Z  {self.who:<18} {self.action:<9} "
                f"{what}{' — ' + self.reason if self.reason else ''}")


def operator(explicit: str | None = None) -> str:
    """Who is acting: --by, TAXI_OPERATOR, or login@host."""
    if explicit:
        return explicit
    if os.environ.get(OPERATOR_ENV):
        return os.environ[OPERATOR_ENV]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _LocalFiles:
    """The few tf.io.gfile calls used here, for local paths: the router and the tools read
    and write the log without importing TensorFlow."""

    @staticmethod
    def makedirs(path: str) -> None:
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def isdir(path: str) -> bool:
        return os.path.isdir(path)

    @staticmethod
    def listdir(path: str) -> list[str]:
        return os.listdir(path)

    @staticmethod
    def GFile(path: str, mode: str = "r"):  # noqa: N802 - tf.io.gfile's name
        return open(path, mode, encoding="utf-8")  # noqa: SIM115 - a context manager

    @staticmethod
    def rename(source: str, target: str, overwrite: bool = False) -> None:
        if not overwrite and os.path.exists(target):
            raise FileExistsError(target)
        os.rename(source, target)


def _fs(path: str):
    if "://" not in path:
        return _LocalFiles
    import tensorflow as tf  # gs:// and the other file systems TensorFlow reads

    return tf.io.gfile


def append(control_dir: str, action: str, reason: str = "", who: str | None = None,
           **details: Any) -> Record:
    """Writes one record; returns it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    record = Record(action, operator(who), reason, now.isoformat(), uuid.uuid4().hex[:12],
                    details)
    folder = f"{control_dir.rstrip('/')}/{LOG_DIR}"
    gfile = _fs(folder)
    gfile.makedirs(folder)
    # The action in the name: readers of one kind of record skip the others unread.
    name = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{action}-{record.id}.json"
    tmp = f"{folder}/.{name}.partial"
    with gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(asdict(record)))
    gfile.rename(tmp, f"{folder}/{name}", overwrite=False)  # never half a record
    return record


def read(control_dir: str, actions: tuple[str, ...] = ()) -> list[Record]:
    """Every record, oldest first; with `actions`, only those."""
    folder = f"{control_dir.rstrip('/')}/{LOG_DIR}"
    gfile = _fs(folder)
    if not gfile.isdir(folder):
        return []
    found = []
    for name in sorted(n for n in gfile.listdir(folder) if n.endswith(".json")
                       and not n.startswith(".")):
        parts = name.split("-")
        if actions and len(parts) > 2 and parts[1] not in actions:
            continue
        with gfile.GFile(f"{folder}/{name}") as f:
            record = Record(**json.loads(f.read()))
        if not actions or record.action in actions:
            found.append(record)
    return found


