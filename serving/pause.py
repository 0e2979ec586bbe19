"""Stopping the model: while serving is paused every :predict is answered by an explicit
fallback instead of the model, until someone resumes.

- `previous`: the version served before the newest one (chosen when pausing, and named);
- `constant`: one probability for every row (for example the training base rate), stated
  by whoever pauses, never guessed;
- `refuse`: 503 with the reason.

The pause lives in the rollout state (rollout.json) that the local server, the router and
TF Serving's models.config already follow, so every serving path honours it at its next
poll, without a restart; every answer says it (`X-Served-By: 3;paused` or `constant;paused`,
and `X-Paused: FALLBACK; REASON`), and so does every request-log record (`paused`), which
the monitor leaves out. The bandit neither routes nor learns while paused: labels that
arrive are held and applied at `resume`.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any

FALLBACKS = ("previous", "constant", "refuse")


class PauseError(ValueError):
    """A pause that cannot be made as asked; the message says why and what to pass."""


@dataclass(frozen=True)
class Pause:
    reason: str
    fallback: str
    who: str
    since: float
    version: int | None = None  # previous: the version that answers
    constant: float | None = None  # constant: the probability every row gets

    def route(self) -> str:
        return f"{self.version if self.fallback == 'previous' else self.fallback};paused"

    def headers(self) -> dict[str, str]:
        """What every answer carries while paused (the reason URL-encoded: headers are
        ASCII)."""
        return {"X-Paused": f"{self.fallback}; {urllib.parse.quote(self.reason, safe=' ,.:')}"}

    def refusal(self) -> str:
        return (f"serving is paused ({self.reason}; since "
                f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(self.since))}, by "
                f"{self.who}): this model answers no predictions until someone resumes it")

    def log_field(self) -> dict[str, Any]:
        """The request log's `paused` field."""
        return {"fallback": self.fallback, "reason": self.reason, "version": self.version,
                "constant": self.constant}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_dict(data: dict[str, Any] | None) -> Pause | None:
    """The pause recorded in the rollout state (which may carry more, e.g. the Vertex split
    to restore), or None."""
    if not data:
        return None
    names = {f.name for f in dataclasses.fields(Pause)}
    return Pause(**{k: v for k, v in data.items() if k in names})


def make(reason: str, fallback: str, who: str, pushed: list[int], serving: int | None,
         version: int | None = None, constant: float | None = None) -> Pause:
    """A pause, checked: the fallback version exists, the constant is a probability."""
    if not reason.strip():
        raise PauseError("say why serving is paused (--reason): it is shown with every answer")
    if fallback not in FALLBACKS:
        raise PauseError(f"--fallback must be one of {', '.join(FALLBACKS)}")
    if fallback == "previous":
        if version is None:
            older = [v for v in pushed if serving is None or v < serving]
            if not older:
                raise PauseError(f"no version older than {serving} is pushed to fall back to; "
                                 f"pushed: {pushed} (use --fallback constant or refuse)")
            version = older[-1]
        elif version not in pushed:
            raise PauseError(f"version {version} is not pushed; pushed: {pushed}")
        return Pause(reason, fallback, who, time.time(), version=version)
    if fallback == "constant":
        if constant is None or not 0.0 <= constant <= 1.0:
            raise PauseError("--fallback constant needs --constant P, a probability in [0, 1] "
                             "(for example the training base rate: the run summary's "
                             "mean_label)")
        return Pause(reason, fallback, who, time.time(), constant=constant)
    return Pause(reason, fallback, who, time.time())
