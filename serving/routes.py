"""The URL rule the local server and the router share: which paths exist, and which write.

A write (`:feedback`: labels that move the bandit's traffic for everyone) has one path,
`/v1/models/NAME:feedback`. A label names the request it answers, not a version, so a
versioned or labelled `:feedback` is no path at all: both processes refuse it (404, naming
the one path), and the router never forwards a write. Paths are read percent-decoded, so
`%3Afeedback` is the same write as `:feedback` wherever it appears.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

PREDICT = ":predict"
FEEDBACK = ":feedback"
METADATA = "/metadata"
URL = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                 r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                 r"(?P<rest>/metadata|:predict|:feedback)?$")


@dataclass(frozen=True)
class Route:
    name: str
    version: str | None
    label: str | None
    rest: str | None  # "/metadata", ":predict", ":feedback" or None (status)


def path_of(raw: str) -> str:
    """The request target's path, query left out and percent-escapes decoded."""
    return urllib.parse.unquote(urllib.parse.urlsplit(raw).path)


def parse(raw: str) -> Route | None:
    match = URL.match(path_of(raw))
    return Route(match["name"], match["version"], match["label"], match["rest"]) if match \
        else None


def feedback_path(model_name: str) -> str:
    return f"/v1/models/{model_name}{FEEDBACK}"


def is_write(raw: str) -> bool:
    """Whether a request target asks for a write in any spelling: the router's test for what
    it must never forward."""
    return FEEDBACK in path_of(raw).lower()


def misplaced_write(raw: str, model_name: str) -> str | None:
    """Why a write target is refused (None: it is the one write path)."""
    if path_of(raw) == feedback_path(model_name):
        return None
    return (f"{path_of(raw)} is no write path: labels go to POST "
            f"{feedback_path(model_name)} (a label names the request it answers, not a "
            "version or a label)")
