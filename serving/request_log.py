"""The request log: a sample of served rows and their predictions, one JSON object per line,
written by the local server and read by the monitor and the hybrid-serving analysis.

A record holds `time` (the server's clock, epoch seconds), `model`, `version`, `route`,
`signature`, `features` (the raw row as the client sent it), `prediction`, and when the
client sent X-Request-Id a `key` (`ID/i` for row i of a batch), the key labels join on
later; with hybrid serving also `lookup_key` and `source` (table or model); while serving
is paused, `paused` (the fallback that answered, and why: the monitor leaves these out).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class RequestLog:
    """Writes a sample of requests (raw features) and predictions as JSONL."""

    def __init__(self, path: str | Path | None, sample_rate: float, seed: int | None = None):
        self.path = Path(path) if path else None
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._file = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", buffering=1, encoding="utf-8")

    def write(self, model: str, version: int | None, route: str, signature: str,
              inputs: dict[str, Any], response: dict, request_id: str = "",
              lookup_keys: list[str | None] | None = None,
              from_table: list[bool] | None = None, paused: dict | None = None) -> None:
        """`inputs` are the batch's tensors by feature (anything with `.numpy()`)."""
        if self._file is None:
            return
        predictions = response.get("predictions", response.get("outputs"))
        columns = {k: v.numpy().tolist() for k, v in inputs.items()}
        count = len(next(iter(columns.values())))
        lines = []
        with self._lock:
            for i in range(count):
                if self._rng.random() >= self.sample_rate:
                    continue
                features = {k: (v[i].decode("utf-8", "replace") if isinstance(v[i], bytes)
                                else v[i]) for k, v in columns.items()}
                prediction = predictions[i] if isinstance(predictions, list) else \
                    {k: v[i] for k, v in predictions.items()}
                record = {"time": time.time(), "model": model, "version": version,
                          "route": route, "signature": signature, "features": features,
                          "prediction": prediction}
                if request_id:  # the client's X-Request-Id: the key labels join on later
                    record["key"] = request_id if count == 1 else f"{request_id}/{i}"
                if paused:  # answered by a fallback while serving was paused
                    record["paused"] = paused
                if lookup_keys and lookup_keys[i] is not None:  # hybrid serving's key
                    record["lookup_key"] = lookup_keys[i]
                    record["source"] = "table" if from_table and from_table[i] else "model"
                lines.append(json.dumps(record))
            if lines:
                self._file.write("\n".join(lines) + "\n")

    def close(self) -> None:
        if self._file:
            self._file.close()


@dataclass
class Line:
    """One non-blank line of a log: its record, or why it has none."""

    number: int
    record: dict[str, Any] | None
    problem: str = ""


def read(path: str | Path) -> Iterator[Line]:
    """Every non-blank line of a request log, in file order. What to do with a line that is
    not a JSON object is the reader's call: the monitor counts it, the analysis refuses."""
    with Path(path).open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield Line(number, None, f"not JSON ({e.msg})")
                continue
            if not isinstance(record, dict):
                yield Line(number, None, "not a JSON object")
                continue
            yield Line(number, record)


def features(record: dict[str, Any]) -> dict[str, Any] | None:
    """The raw row of a record: its `features`, or the record itself for a log of flat raw
    rows (any JSONL of rows can be monitored). None when it is not an object."""
    row = record.get("features", record)
    return row if isinstance(row, dict) else None
