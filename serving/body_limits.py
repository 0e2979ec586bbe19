"""How the server and the router answer a request body they will not read: with an HTTP
status and a JSON error that names the limit and the setting that raises it, never a
dropped connection.

Why the care: closing a socket with unread bytes in it makes the kernel send a reset, and a
client still writing its body then sees `Connection reset by peer` instead of the answer.
A client that sends `Expect: 100-continue` (curl does for large bodies) is answered before
it sends the body at all; any other client gets the answer first and the rest of its body
is read and dropped, bounded in bytes and seconds, before the connection closes.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

SETTING = "--max-body-mb"
DEFAULT_MAX_BODY_MB = 16.0
DEFAULT_MAX_BODY_BYTES = int(DEFAULT_MAX_BODY_MB * (1 << 20))
DRAIN_BYTES = 1 << 30  # at most this much of a refused body is read and dropped
DRAIN_SECONDS = 10.0
MAX_JSON_DEPTH = 64  # a :predict body is 4 deep ({"instances": [{"f": [..]}]})
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


class BodyRefused(Exception):
    """A body this server will not read: the status and the message to answer with."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(SETTING, type=float, default=DEFAULT_MAX_BODY_MB,
                        help="largest request body in MiB (more: 413 naming the limit, "
                             "answered before the body is read)")


def max_bytes(args: argparse.Namespace) -> int:
    """The parsed --max-body-mb, in bytes."""
    return int(args.max_body_mb * (1 << 20))


class LimitedBody:
    """For a request handler whose server has `max_body_bytes`: `read_body()` reads a body
    within the limit, or answers and returns None; `Expect: 100-continue` is answered
    before an oversized body is sent."""

    def handle_expect_100(self) -> bool:
        return answer_early(self, self.server.max_body_bytes) and super().handle_expect_100()

    def read_body(self) -> bytes | None:
        try:
            length = declared_length(self, self.server.max_body_bytes)
        except BodyRefused as e:
            refuse(self, e)
            return None
        raw = self.rfile.read(length)
        done = getattr(self, "done_reading", None)  # serving/connections.py: off the clock
        if done is not None:
            done()
        if len(raw) < length or getattr(self, "_expired", False):
            # The connection closed (or timed out) under the body: a part of a body is
            # never acted on, even when it happens to parse.
            self.close_connection = True
            return None
        return raw


def declared_length(handler: BaseHTTPRequestHandler, limit: int) -> int:
    """The request's Content-Length, checked against `max_bytes` before a byte is read."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        raise BodyRefused(HTTPStatus.LENGTH_REQUIRED,
                          "chunked request bodies are not accepted: send Content-Length")
    raw = handler.headers.get("Content-Length") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise BodyRefused(HTTPStatus.BAD_REQUEST,
                          f"Content-Length {raw!r} is not a number of bytes") from None
    if length < 0:
        raise BodyRefused(HTTPStatus.BAD_REQUEST, f"Content-Length {length} is negative")
    if length > limit:
        raise BodyRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"request body of {length:,} bytes exceeds this server's limit of "
                          f"{limit:,} bytes ({limit / (1 << 20):g} MiB, {SETTING}); "
                          "split the request into smaller batches or raise the limit")
    return length


def answer_early(handler: BaseHTTPRequestHandler, limit: int) -> bool:
    """For `Expect: 100-continue`: refuse an oversized body before the client sends it
    (True: go on and read it)."""
    try:
        declared_length(handler, limit)
    except BodyRefused as e:
        refuse(handler, e, drain=False)
        return False
    return True


def refuse(handler: BaseHTTPRequestHandler, error: BodyRefused, drain: bool = True) -> None:
    """Answers `error` as JSON, then (with `drain`) reads and drops what the client may
    still be sending of its body, and closes the connection."""
    data = json.dumps({"error": str(error)}).encode()
    handler.send_response(error.status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)
    handler.wfile.flush()
    handler.close_connection = True
    raw = handler.headers.get("Content-Length") or ""
    if drain and raw.isdigit():
        _drain(handler, min(int(raw), DRAIN_BYTES))


def _drain(handler: BaseHTTPRequestHandler, remaining: int) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    connection: socket.socket = handler.connection
    try:
        while remaining > 0 and time.monotonic() < deadline:
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = handler.rfile.read1(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)
    except OSError:  # the client gave up or the time ran out: nothing more to say
        return


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings left out),
    without parsing it: Python's parser recurses, and 100,000 brackets would end in a
    RecursionError instead of an answer."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # cannot nest deeper than the brackets it has
    import numpy as np

    code = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    step = (np.isin(code, (ord("["), ord("{"))).astype(np.int32)
            - np.isin(code, (ord("]"), ord("}"))).astype(np.int32))
    return int(np.cumsum(step).max(initial=0))


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or BodyRefused (400) naming what is wrong with it."""
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise BodyRefused(HTTPStatus.BAD_REQUEST,
                          f"JSON nested {depth:,} deep; requests here nest at most "
                          f"{MAX_JSON_DEPTH} deep")
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BodyRefused(HTTPStatus.BAD_REQUEST, f"malformed JSON: {e}") from None
    except RecursionError:  # unbalanced brackets the count above could not see
        raise BodyRefused(HTTPStatus.BAD_REQUEST, "JSON nested too deep to read") from None
