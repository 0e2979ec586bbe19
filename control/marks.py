"""Contaminated data: a stretch of time (and optionally a filter, such as one company) whose
rows must never be learned from, with the reason: a flooded warehouse, an outage that made it
look as if nobody bought. A mark is a record in the audit log (control/records.py); removing
it is another record, so the log says who marked what, when, why, and who took it back.

Every later run honours the active marks: SpanExamples and SpanWindow leave the rows out of
this span and of every older span in the window, so training, evaluation, the statistics
that drift is measured on and the model's training record all go without them (counted by
mark in the run summary); the monitor leaves them out of its reference rows and the bandit
does not learn from labels of requests served inside one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from control import records

MARK, UNMARK = "mark", "unmark"


class MarkError(ValueError):
    """A mark that cannot be made or removed; the message says why."""


@dataclass(frozen=True)
class Mark:
    id: str
    start: int  # UNIX seconds, inclusive
    end: int  # UNIX seconds, exclusive
    column: str  # the time column the stretch is of
    where: dict[str, str] = field(default_factory=dict)  # column -> value, all must match
    reason: str = ""
    who: str = ""
    time: str = ""

    def describe(self) -> str:
        span = f"{_utc(self.start)} to {_utc(self.end)}"
        where = "".join(f", {k}={v}" for k, v in self.where.items())
        return f"mark {self.id}: {self.column} {span}{where} ({self.reason}; {self.who})"

    def covers(self, seconds: np.ndarray, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """True for each row inside the stretch that matches every `where` value."""
        seconds = np.asarray(seconds, dtype=float)
        inside = (seconds >= self.start) & (seconds < self.end)
        for name, value in self.where.items():
            column = columns.get(name)
            if column is None:
                return np.zeros(len(seconds), bool)
            inside &= np.array([_text(v) == value for v in column])
        return inside


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _utc(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")


def parse_time(text: str) -> int:
    """A date (2016-03-01: its midnight UTC) or an ISO time (2016-03-01T14:00, UTC unless it
    names a zone) as UNIX seconds."""
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise MarkError(f"{text!r} is not a date (2016-03-01) or a time "
                        "(2016-03-01T14:00, UTC unless a zone is given)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def parse_where(items: list[str]) -> dict[str, str]:
    where = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise MarkError(f"--where {item!r}: write COLUMN=VALUE, e.g. company=Flash Cab")
        where[name.strip()] = value.strip()
    return where


def add(control_dir: str, start: int, end: int, column: str, reason: str,
        where: dict[str, str] | None = None, who: str | None = None) -> Mark:
    if end <= start:
        raise MarkError(f"the stretch ends ({_utc(end)}) before it starts ({_utc(start)})")
    if not reason.strip():
        raise MarkError("say why the data is contaminated (--reason): the next person reads it")
    record = records.append(control_dir, MARK, reason, who, start=start, end=end,
                            column=column, where=dict(where or {}))
    return _mark(record)


def remove(control_dir: str, mark_id: str, reason: str, who: str | None = None) -> Mark:
    found = {m.id: m for m in active(control_dir)}
    if mark_id not in found:
        raise MarkError(f"no active mark {mark_id!r}; active: {', '.join(found) or 'none'}")
    if not reason.strip():
        raise MarkError("say why the mark is removed (--reason)")
    records.append(control_dir, UNMARK, reason, who, mark=mark_id)
    return found[mark_id]


def _mark(record: records.Record) -> Mark:
    d = record.details
    return Mark(record.id, int(d["start"]), int(d["end"]), d["column"], dict(d.get("where", {})),
                record.reason, record.who, record.time)


def active(control_dir: str) -> list[Mark]:
    """Marks made and not removed, oldest first."""
    if not control_dir:
        return []
    log = records.read(control_dir, (MARK, UNMARK))
    removed = {r.details["mark"] for r in log if r.action == UNMARK}
    return [_mark(r) for r in log if r.action == MARK and r.id not in removed]


def to_json(marks: list[Mark]) -> str:
    """Marks as a pipeline parameter: what the run honours, and its cache key."""
    return json.dumps([asdict(m) for m in marks], sort_keys=True)


def from_json(text: str) -> list[Mark]:
    return [Mark(**m) for m in json.loads(text or "[]")]


def digest(marks: list[Mark]) -> str:
    return hashlib.sha256(to_json(marks).encode()).hexdigest()[:12]


def excluded(marks: list[Mark], seconds: np.ndarray, columns: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, dict[str, int]]:
    """(rows to leave out, how many each mark covers) for rows with these times and
    columns; a row two marks cover counts for the first."""
    out = np.zeros(len(seconds), bool)
    counts = {}
    for mark in marks:
        hit = mark.covers(seconds, columns) & ~out
        counts[mark.id] = int(hit.sum())
        out |= hit
    return out, counts
