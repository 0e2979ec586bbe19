"""Who may change what: the write paths over HTTP (`:feedback`, whose labels move the bandit's
traffic) take a credential; reads (`:predict`, status, metadata) stay open, as TF Serving has
them. Which paths are writes is serving/routes.py's rule, the same in the server and the
router.

Credentials are the operator's: a file of `NAME SECRET` lines (`--write-tokens-file`, never
in the repository; a file that group or others may read is refused at start) or
TAXI_WRITE_TOKEN=NAME:SECRET in the environment. A caller sends `Authorization: Bearer
SECRET`; the secret is compared in constant time with each configured one (as sha256
digests, so length leaks nothing either), answered 401 when absent and 403 when wrong, with
a JSON error. The credential's name, never its secret, goes into the audit log with each
accepted write. Without any credential configured the write paths accept loopback callers
only, and only when nothing stands between them and this process: a request that carries a
forwarding header (a proxy on the same machine makes every caller look like loopback) is
refused, and a server refuses to start on another address unless it is read-only. Each
credential may send at most `--max-labels-per-minute` labels, counted across every process
that shares the rollout's config dir; a body that would pass the cap is refused whole (429),
naming the limit.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control import records
from serving import bandit

log = logging.getLogger(__name__)

TOKEN_ENV = "TAXI_WRITE_TOKEN"
LOOPBACK = "loopback"  # the name writes are recorded under when no credential is configured
# Headers a proxy adds for the hop it made: where one is present the TCP peer is the proxy,
# not the caller, and being on loopback proves nothing.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
                 "X-Real-IP", "Via", "X-Client-IP", "True-Client-IP", "CF-Connecting-IP")


class AuthError(ValueError):
    """A credential setting that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Refusal:
    status: int  # 401, 403 or 429
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


class WriteAuth:
    """Decides whether a write request may go on, and under which name."""

    def __init__(self, credentials: dict[str, str] | None = None,
                 max_labels_per_minute: int = 10_000):
        if max_labels_per_minute < 1:
            raise AuthError("--max-labels-per-minute must be >= 1")
        self._digests = [(name, _digest(secret)) for name, secret in (credentials or {}).items()]
        self.max_labels_per_minute = max_labels_per_minute
        self._sent: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    @classmethod
    def from_settings(cls, tokens_file: str | None, max_labels_per_minute: int = 10_000,
                      env: dict[str, str] | None = None) -> WriteAuth:
        credentials: dict[str, str] = {}
        if tokens_file:
            path = Path(tokens_file)
            if not path.is_file():
                raise AuthError(f"--write-tokens-file {tokens_file}: no such file")
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise AuthError(f"--write-tokens-file {tokens_file} may be read by group or "
                                f"others (mode {mode:o}): its secrets would be anyone's. "
                                f"Run `chmod 600 {tokens_file}`")
            for number, line in enumerate(path.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, _, secret = line.partition(" ")
                if not name or len(secret.strip()) < 16:
                    raise AuthError(f"{tokens_file}:{number}: write `NAME SECRET`, the secret "
                                    "16+ characters (e.g. `openssl rand -hex 24`)")
                credentials[name] = secret.strip()
        env = os.environ if env is None else env
        if env.get(TOKEN_ENV):
            name, sep, secret = env[TOKEN_ENV].partition(":")
            if not sep or len(secret) < 16:
                raise AuthError(f"{TOKEN_ENV} must be NAME:SECRET, the secret 16+ characters")
            credentials[name] = secret
        return cls(credentials, max_labels_per_minute)

    def describe(self) -> str:
        if self.configured:
            names = ", ".join(name for name, _ in self._digests)
            return (f"write paths (:feedback) need a credential ({names}); at most "
                    f"{self.max_labels_per_minute:,} labels a minute each")
        return ("write paths (:feedback) accept loopback callers only: no credential is "
                f"configured (--write-tokens-file or {TOKEN_ENV})")

    def check_bind(self, host: str, writes: bool) -> None:
        """Refuses to open write paths to a network without a credential."""
        if writes and not self.configured and not is_loopback(host):
            raise AuthError(f"refusing to listen on {host} with write paths open and no "
                            f"credential: labels posted from anywhere would steer traffic. "
                            f"Configure --write-tokens-file (or {TOKEN_ENV}), bind 127.0.0.1, "
                            "or start --read-only")

    def who(self, headers, client_host: str) -> tuple[str | None, Refusal | None]:
        """(credential name, None) for an allowed write, else (None, refusal); `headers` is
        the request's (a mapping of header names to values)."""
        if not self.configured:
            proxied = next((h for h in PROXY_HEADERS if headers.get(h) is not None), None)
            if proxied is not None:
                return None, Refusal(403, f"this request came through a proxy ({proxied} "
                                          "header): without a credential configured, writes "
                                          "are taken only from loopback callers that reach "
                                          "this server directly. Configure "
                                          f"--write-tokens-file (or {TOKEN_ENV})")
            if is_loopback(client_host):
                return f"{LOOPBACK}:{client_host}", None
            return None, Refusal(403, "write paths accept only loopback callers on this "
                                      "server (no credential is configured)")
        scheme, _, secret = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None, Refusal(401, "this write path needs a credential: send "
                                      "`Authorization: Bearer TOKEN`",
                                 {"WWW-Authenticate": 'Bearer realm="writes"'})
        presented = _digest(secret.strip())
        found = None
        for name, digest in self._digests:  # every one compared: the time says nothing
            if hmac.compare_digest(presented, digest):
                found = name
        if found is None:
            return None, Refusal(403, "the credential is not valid for this server")
        return found, None

    def take_labels(self, name: str, count: int, store: bandit.BanditStore | None = None,
                    now: float | None = None) -> Refusal | None:
        """Counts `count` labels against `name`'s cap for the last minute; refuses the whole
        body (counting none of it) when it would pass the cap. With `store`, the count is
        the one every process sharing its config dir keeps (server, router, command line)."""
        if store is not None:
            used = store.take_quota(name, count, self.max_labels_per_minute, now)
        else:
            now = time.monotonic() if now is None else now
            with self._lock:
                sent = self._sent[name]
                while sent and sent[0][0] <= now - 60:
                    sent.popleft()
                used = sum(n for _, n in sent)
                if used + count <= self.max_labels_per_minute:
                    sent.append((now, count))
                    used = None
        if used is None:
            return None
        return Refusal(429, f"{count} labels would pass the limit of "
                            f"{self.max_labels_per_minute:,} labels a minute for {name!r} "
                            f"({used:,} in the last minute); nothing was applied (raise it "
                            "with --max-labels-per-minute)", {"Retry-After": "60"})


def add_write_arguments(parser: argparse.ArgumentParser) -> None:
    """Who may post labels: the same flags on the server and the router."""
    group = parser.add_argument_group("write paths (:feedback; serving/auth.py)")
    group.add_argument("--write-tokens-file", default=None,
                       help=f"`NAME SECRET` lines: the credentials that may post labels (or "
                            f"{TOKEN_ENV}=NAME:SECRET); none: loopback callers only")
    group.add_argument("--max-labels-per-minute", type=int, default=10_000,
                       help="labels one credential may post in a minute (default 10000)")
    group.add_argument("--read-only", action="store_true",
                       help="take no labels at all (reads only): may listen anywhere "
                            "without a credential")


def write_auth(args: argparse.Namespace) -> WriteAuth:
    return WriteAuth.from_settings(args.write_tokens_file, args.max_labels_per_minute)


def take_feedback(write_auth: WriteAuth, headers, client_host: str, body: Any,
             store, paused: bool, marks_now: tuple,
             control_dir: str | None, where: str) -> dict | Refusal:
    """A :feedback request as the server and the router take it: the caller's credential, the
    cap on labels, then the bandit; an accepted write is recorded in the audit log under the
    credential's name (never its secret)."""
    name, refusal = write_auth.who(headers, client_host)
    if refusal is not None:
        log.warning("refused :feedback from %s: %s", client_host, refusal.message)
        return refusal
    labels = bandit.labels_from_json(body)  # a malformed body is refused before counting
    refusal = write_auth.take_labels(name, len(labels), store)
    if refusal is not None:
        return refusal
    result, state = store.feedback(labels, paused=paused, marks=marks_now)
    if control_dir:
        records.append(control_dir, "feedback", "", name, labels=len(labels),
                       accepted=result.accepted, held=result.held, via=where)
    return bandit.reply(result, state)
