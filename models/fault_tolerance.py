"""Training that survives a lost machine: Keras' BackupAndRestore keeps the training state
(weights, optimizer, round and step) in a backup folder every N steps, and a restarted
process, the single Trainer or any replica of a cluster, resumes from the last backup
instead of step 0. The Trainer removes the folder once the model is exported.

The folder is named by what is being trained (the rows, the Transform graph, the settings,
the cluster's shape) under a root, not by the Trainer's output folder: a run restarted
after a crash gets new output folders but the same training, so it finds its backup; a
different training never does.

What is not restored is the position in the input: after a resume the input starts again
from its beginning (shuffled with the same seed) and the model goes on from the saved step
with the optimizer state it had, so the model trains the configured number of steps, a few
rows twice. Under parameter servers Keras backs up at the end of each round only (the
coordinator runs no per-step callbacks). A backup every so many seconds is offered to a
single training process only: the replicas of a cluster write a backup together, so they
must agree on the step, and their clocks do not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import tensorflow as tf

log = logging.getLogger(__name__)
RESUMED = "_resumed_from_step"  # on the model: the step a restarted training went on from
BACKED_UP = "training state backed up at step"  # the log line a backup writes


def backup_dir(root: str, training: dict[str, Any]) -> str:
    """ROOT/KEY, KEY naming the training by its inputs and settings."""
    key = hashlib.sha256(json.dumps(training, sort_keys=True, default=str).encode())
    return f"{root.rstrip('/')}/{key.hexdigest()[:16]}"


class Backup(tf.keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also backs up every `every_seconds`, says when it resumed and
    when it wrote a backup, and leaves the folder for the caller to clear after export (a
    process lost between the end of training and the export then finds the finished state
    and exports without training again)."""

    def __init__(self, folder: str, every_steps: int = 0, every_seconds: float = 0.0,
                 per_round: bool = False):
        save_freq = "epoch" if per_round or not every_steps else every_steps
        super().__init__(folder, save_freq=save_freq, delete_checkpoint=False)
        self.every_seconds = 0.0 if per_round else every_seconds
        self.resumed_from = 0
        self.last_step = 0  # of the newest backup, this process's or the one resumed from
        self.written = 0
        self._last = time.monotonic()
        self._batch = -1

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)  # restores the newest backup, if any
        self.resumed_from = self.last_step = _step(self.model)
        setattr(self.model, RESUMED, self.resumed_from)
        self._last = time.monotonic()
        if self.resumed_from:
            log.warning("resumed from the backup at step %d, not from step 0 (%s)",
                        self.resumed_from, self.backup_dir)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        self._batch = batch
        if self.every_seconds and time.monotonic() - self._last >= self.every_seconds:
            self._backup(epoch=self._current_epoch, batch=batch)

    def on_train_end(self, logs: dict | None = None) -> None:
        """The finished state too (a backup per round has it already): a process lost
        between training and export then loses no step."""
        if self.save_freq != "epoch" and _step(self.model) != self.last_step:
            self._backup(epoch=self._current_epoch, batch=self._batch)
        super().on_train_end(logs)

    def _implements_train_batch_hooks(self) -> bool:
        return bool(self.every_seconds) or super()._implements_train_batch_hooks()

    def _backup(self, epoch: int, batch: int = 0) -> None:
        started = time.monotonic()
        super()._backup(epoch=epoch, batch=batch)
        self._last = time.monotonic()
        self.written += 1
        self.last_step = _step(self.model)
        log.info("%s %d in %.0f ms (%s)", BACKED_UP, self.last_step,
                 1000 * (self._last - started), self.backup_dir)


def _step(model: tf.keras.Model) -> int:
    return int(model.optimizer.iterations.numpy())


def callback(folder: str, strategy: tf.distribute.Strategy, every_steps: int = 0,
             every_seconds: float = 0.0, processes: int = 1) -> Backup:
    """The backup callback for `folder` under `strategy`; `processes`: how many training
    processes share the backup (the replicas of a cluster)."""
    if every_seconds and processes > 1 and not every_steps:
        raise ValueError(f"a backup every {every_seconds:g} seconds needs a single training "
                         f"process; the {processes} replicas of this cluster must back up at "
                         "the same step: set backup_every_steps instead")
    per_round = isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)
    return Backup(folder, every_steps, 0.0 if processes > 1 else every_seconds, per_round)


class PeerLost(RuntimeError):
    """A replica of the training cluster went away mid-training."""


def peer_lost(error: Exception, strategy: str, backup: Backup | None) -> PeerLost:
    """What a person needs when a cluster loses a machine: what happened, what is kept,
    and what brings the training back."""
    first = str(getattr(error, "message", error)).strip().splitlines()
    cause = first[0] if first else type(error).__name__
    if backup is None:
        kept = ("backups are off (backup_every_steps 0), so a restart trains from step 0")
    elif backup.last_step:
        kept = (f"the training state was last backed up at step {backup.last_step} in "
                f"{backup.backup_dir}; start every replica again (on Vertex: "
                "training_restart_job) and training resumes from there")
    else:
        kept = f"no backup was written yet in {backup.backup_dir}: a restart begins at step 0"
    return PeerLost(f"training under {strategy} lost a replica of its cluster "
                    f"({type(error).__name__}: {cause}); {kept}")


def clear(folder: str) -> None:
    """Removes the backup once the model it led to is exported."""
    if tf.io.gfile.exists(folder):
        tf.io.gfile.rmtree(folder)
        log.info("training ended well: backup %s removed", folder)
