"""Training progress as log records on one logger, so that a console can draw it live and a
log file keeps it, without Keras printing to the terminal."""

from __future__ import annotations

import logging
import time

import tensorflow as tf

from models import PROGRESS_LOGGER

log = logging.getLogger(PROGRESS_LOGGER)


class RoundLog(tf.keras.callbacks.Callback):
    """`round 3/10, step 300/1000 loss 0.312 auc 0.934 val loss ...` after each round. The
    record carries `done` and `total` for a bar. Alone (no batch hooks) under a
    ParameterServerStrategy, whose coordinator refuses batch-level callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self._step = 0

    def _total(self) -> int:
        return int((self.params.get("steps") or 0) * (self.params.get("epochs") or 1))

    def _emit(self, text: str) -> None:
        log.info("%s", text, extra={"done": self._step, "total": self._total()})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._step = max(self._step, (epoch + 1) * int(self.params.get("steps") or 0))
        self._emit(f"round {epoch + 1}/{self.params.get('epochs')}, step "
                   f"{self._step}/{self._total()}" + _figures(logs or {}))


class ProgressLog(RoundLog):
    """RoundLog, and `step 400/1000 loss 0.312 auc 0.934` at most every `every_seconds`."""

    def __init__(self, every_seconds: float = 1.0) -> None:
        super().__init__()
        self.every_seconds = every_seconds
        self._last = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._step += 1
        now = time.monotonic()
        if now - self._last >= self.every_seconds:
            self._last = now
            self._emit(f"step {self._step}/{self._total()}" + _figures(logs or {}))


def for_strategy(strategy: tf.distribute.Strategy) -> RoundLog:
    """Step-level progress where the strategy allows batch hooks, round-level otherwise."""
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        return RoundLog()
    return ProgressLog()


def _figures(logs: dict) -> str:
    shown = [(k, logs[k]) for k in ("loss", "auc", "val_loss", "val_auc") if k in logs]
    return "".join(f" {k.replace('_', ' ')} {float(v):.3f}" for k, v in shown)
