"""A thin router in front of real TF Serving: the rollout's traffic split and the bandit,
which TF Serving does not do itself.

TF Serving loads every version models.config lists and answers `/versions/N` and
`/labels/L`, but it never splits unversioned traffic between them. This router listens
where clients call, picks the version of each unversioned `:predict` as the local server
does (the bandit's weights, else the canary's fraction, else `stable`), forwards the body
unchanged to TF Serving's `/v1/models/NAME/versions/V:predict`, and answers with TF
Serving's response and `X-Served-By: V;route`. Keyed requests (`X-Request-Id`) that the
bandit routed go to its ledger, and `:feedback` is answered here, so labels reach the
bandit. Everything else (status, metadata, versioned and labelled calls) is passed through
with `Via` and `X-Forwarded-For` added, as a proxy should; a write (`:feedback` on any other
path, serving/routes.py) is never forwarded, and the credential never leaves the router.
The routing state is read from serving.rollout's config dir every poll.

    python -m serving.router --upstream http://tf-serving:8501 [--port 8080]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import random
import sys
import threading
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import Any

from control import marks
from serving import answering, auth, bandit, body_limits, connections, model_config, routes
from serving import pause as pause_mod

log = logging.getLogger("serving.router")
PREDICT = routes.PREDICT
PASSED_HEADERS = ("Content-Type", "X-Request-Id")  # never Authorization: writes end here
VIA = "1.1 serving.router"


class RoutingState:
    """What serving.rollout says now (serving/answering.py's Snapshot: labels, canary
    fraction, bandit weights, pause, versions), replaced whole every poll, never field by
    field; each request reads it once."""

    def __init__(self, config_dir: str | Path, poll_seconds: float = 1.0,
                 control_dir: str | None = None):
        self.config_dir = Path(config_dir)
        self.control_dir = control_dir
        self.store = bandit.BanditStore(self.config_dir)
        self.poll_seconds = poll_seconds
        self.snapshot = answering.Snapshot()
        self.marks: tuple = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pause(self) -> pause_mod.Pause | None:
        return self.snapshot.pause

    def refresh(self) -> None:
        snapshot = answering.Snapshot.read(self.config_dir)
        if snapshot.pause != self.snapshot.pause:
            log.warning("%s", f"PAUSED, {snapshot.pause.fallback} answers: "
                        f"{snapshot.pause.reason}" if snapshot.pause
                        else "resumed: traffic goes to the models again")
        self.marks = tuple(marks.active(self.control_dir)) if self.control_dir else ()
        self.snapshot = snapshot

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="routing-state", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a half-written state must not stop routing
                log.exception("reading %s failed; routing as before", self.config_dir)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


class Handler(body_limits.LimitedBody, connections.BoundedHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Router

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, json.dumps({"error": message}).encode(),
                    {"Content-Type": "application/json"})

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        self._forward("GET", self.path, None)

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        body = self.read_body()
        if body is None:  # refused, and answered
            return
        path = urllib.parse.urlsplit(self.path).path
        prefix = f"/v1/models/{self.server.model_name}"
        if routes.is_write(self.path):  # answered here or refused: a write is never forwarded
            misplaced = routes.misplaced_write(self.path, self.server.model_name)
            if misplaced:
                return self._error(HTTPStatus.NOT_FOUND, misplaced)
            return self._feedback(body)
        request_id = self.headers.get("X-Request-Id", "")
        try:
            bandit.check_request_id(request_id)
        except model_config.RolloutError as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        snap = self.server.state.snapshot  # read once: the whole request sees one state
        if snap.pause is not None and path.startswith(prefix) and path.endswith(PREDICT):
            return self._paused(snap.pause, prefix, body)
        if path != f"{prefix}{PREDICT}":
            return self._forward("POST", self.path, body)  # versioned, labelled, other models
        if not snap.versions:
            return self._forward("POST", self.path, body)  # no rollout: TF Serving's newest
        answer = answering.choose(snap, snap.versions, self.server.rng)
        version, route = answer.version, answer.route
        status, data, headers = self._upstream(
            "POST", f"{prefix}/versions/{version}{PREDICT}", body)
        if status is None:
            return
        if "X-Paused" in headers:  # the server paused before this router's next poll: its
            return self._reply(status, data, headers)  # fallback answered, and says so
        if route == "bandit" and status == HTTPStatus.OK:
            taken = self._record(version, data, body)
            if taken:
                return self._error(HTTPStatus.CONFLICT, bandit.already_answered(taken))
        self._reply(status, data, {**headers, "X-Served-By": f"{version};{route}"})

    def _paused(self, paused: pause_mod.Pause, prefix: str, body: bytes) -> None:
        """Every :predict of the model while paused, versioned and labelled ones too."""
        headers = {"Content-Type": "application/json", "X-Served-By": paused.route(),
                   **paused.headers()}
        if paused.fallback == "refuse":
            return self._reply(HTTPStatus.SERVICE_UNAVAILABLE,
                               json.dumps({"error": paused.refusal()}).encode(), headers)
        if paused.fallback == "previous":
            status, data, upstream = self._upstream(
                "POST", f"{prefix}/versions/{paused.version}{PREDICT}", body)
            if status == HTTPStatus.NOT_FOUND:  # TF Serving loads it at its next config poll
                return self._reply(HTTPStatus.SERVICE_UNAVAILABLE, json.dumps({
                    "error": f"serving is paused and its fallback, version {paused.version}, "
                             "is not loaded by TF Serving yet"}).encode(), headers)
            if status is not None:
                self._reply(status, data, {**upstream, **headers})
            return
        try:  # constant: as many answers as rows (the router runs no model to check them)
            request = body_limits.parse_json(body)
            rows = request.get("instances") if "instances" in request else request["inputs"]
            count = len(rows) if isinstance(rows, list) else len(next(iter(rows.values())))
        except body_limits.BodyRefused as e:
            return self._error(e.status, str(e))
        except (ValueError, TypeError, KeyError, AttributeError, StopIteration):
            return self._error(HTTPStatus.BAD_REQUEST, "request body must be a JSON object "
                               "with 'instances' or 'inputs'")
        key = "predictions" if "instances" in request else "outputs"
        self._reply(HTTPStatus.OK, json.dumps({key: [paused.constant] * count}).encode(),
                    headers)

    def _record(self, version: int, data: bytes, body: bytes) -> list[str]:
        """Writes a bandit-routed answer's keys to the ledger; the keys it already held
        instead (nothing recorded: the answer is not given)."""
        try:
            response = json.loads(data)
            keyed = bandit.keyed_probabilities(response, self.headers.get("X-Request-Id", ""))
            rows = response.get("predictions", response.get("outputs"))
            count = len(rows) if isinstance(rows, list) else \
                len(next(iter(rows.values()))) if isinstance(rows, dict) and rows else 1
            return self.server.state.store.routed(version, keyed, count,
                                                  _request_rows(body))
        except (ValueError, TypeError, StopIteration):
            log.warning("could not read the keys of a bandit-routed answer; not recorded")
            return []

    def _feedback(self, body: bytes) -> None:
        if self.server.read_only:
            return self._error(HTTPStatus.FORBIDDEN, "this router is read-only: it takes no "
                                                     "labels")
        try:
            state = self.server.state
            reply = auth.take_feedback(self.server.auth, self.headers, self.client_address[0],
                                       body_limits.parse_json(body), state.store,
                                       state.snapshot.pause is not None, state.marks,
                                       state.control_dir, "router")
        except body_limits.BodyRefused as e:
            return self._error(e.status, str(e))
        except model_config.RolloutError as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        if isinstance(reply, auth.Refusal):
            return self._reply(reply.status, json.dumps({"error": reply.message}).encode(),
                               {"Content-Type": "application/json", **reply.headers})
        self.server.state.refresh()  # route by the new weights from the next request on
        self._reply(HTTPStatus.OK, json.dumps(reply).encode(),
                    {"Content-Type": "application/json"})

    def _forward(self, method: str, path: str, body: bytes | None) -> None:
        status, data, headers = self._upstream(method, path, body)
        if status is not None:
            self._reply(status, data, headers)

    def _upstream(self, method: str, path: str, body: bytes | None
                  ) -> tuple[int | None, bytes, dict[str, str]]:
        """TF Serving's answer, or (None, ...) after answering 502 when it cannot be reached."""
        headers = {k: self.headers[k] for k in PASSED_HEADERS if self.headers.get(k)}
        forwarded = ", ".join(v for v in (self.headers.get("X-Forwarded-For"),
                                          self.client_address[0]) if v)
        via = ", ".join(v for v in (self.headers.get("Via"), VIA) if v)
        headers.update({"X-Forwarded-For": forwarded, "Via": via})
        for attempt in (1, 2):  # a kept-alive connection TF Serving closed: one fresh retry
            connection = self.server.connection()
            try:
                connection.request(method, path, body, headers)
                response = connection.getresponse()
                data = response.read()
                kept = {k: v for k, v in response.getheaders()  # e.g. X-Prediction-Source
                        if k.lower() == "content-type" or k.lower().startswith("x-")}
                return response.status, data, kept
            except (OSError, http.client.HTTPException) as e:
                self.server.drop_connection()
                if attempt == 2:
                    self._error(HTTPStatus.BAD_GATEWAY,
                                f"TF Serving at {self.server.upstream} did not answer: "
                                f"{type(e).__name__}: {e}")
        return None, b"", {}


def _request_rows(body: bytes) -> list[dict] | None:
    """A :predict body's rows as sent (row or columnar format), for the bandit's ledger;
    None when it holds no raw rows."""
    try:
        request = json.loads(body or b"null")
        if "instances" in request and all(isinstance(r, dict) for r in request["instances"]):
            return request["instances"]
        columns = request.get("inputs")
        if isinstance(columns, dict) and columns:
            size = len(next(iter(columns.values())))
            return [{k: v[i] for k, v in columns.items()} for i in range(size)]
    except (ValueError, TypeError, AttributeError, IndexError, StopIteration):
        pass
    return None


class Router(connections.BoundedServer):
    def __init__(self, address: tuple[str, int], upstream: str, model_name: str,
                 state: RoutingState, seed: int | None = None, timeout: float = 30.0,
                 write_auth: auth.WriteAuth | None = None, read_only: bool = False,
                 max_body_bytes: int = body_limits.DEFAULT_MAX_BODY_BYTES,
                 request_timeout: float = connections.DEFAULT_REQUEST_TIMEOUT,
                 max_connections: int = connections.DEFAULT_MAX_CONNECTIONS):
        self.auth = write_auth or auth.WriteAuth()
        self.read_only = read_only
        self.auth.check_bind(address[0], writes=not read_only)
        super().__init__(address, Handler, request_timeout, max_connections)
        self.max_body_bytes = max_body_bytes
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"--upstream {upstream!r}: give TF Serving's REST address, "
                             "e.g. http://localhost:8501")
        self.upstream, self.model_name, self.state = upstream, model_name, state
        self._host, self._port = parsed.hostname, parsed.port or 80
        self.upstream_timeout = timeout
        self.rng = random.Random(seed)
        self._local = threading.local()

    def connection(self) -> http.client.HTTPConnection:
        """One kept-alive connection to TF Serving per handler thread."""
        if getattr(self._local, "connection", None) is None:
            self._local.connection = http.client.HTTPConnection(self._host, self._port,
                                                                timeout=self.upstream_timeout)
        return self._local.connection

    def drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_background(self) -> threading.Thread:
        self.state.start()
        thread = threading.Thread(target=self.serve_forever, name="router", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.state.stop()


def main(argv: list[str] | None = None) -> int:
    from settings import quiet
    from settings.layout import Layout

    defaults = Layout.load()
    parser = argparse.ArgumentParser(prog="python -m serving.router", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True,
                        help="TF Serving's REST address, e.g. http://localhost:8501")
    parser.add_argument("--port", type=int, default=8080, help="where clients call (8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--model-name", default=defaults.serving_model_name)
    parser.add_argument("--config-dir", default=defaults.serving_config_dir,
                        help="serving.rollout's config dir (rollout.json, bandit.json)")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="how often to read the rollout and the bandit's weights")
    body_limits.add_argument(parser)
    connections.add_arguments(parser)
    auth.add_write_arguments(parser)
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        level = quiet.terminal_level(args.log_level, args.verbose)
        router = Router((args.host, args.port), args.upstream, args.model_name,
                        RoutingState(args.config_dir, args.poll_seconds,
                                     defaults.control_dir),
                        write_auth=auth.write_auth(args), read_only=args.read_only,
                        max_body_bytes=body_limits.max_bytes(args),
                        request_timeout=args.request_timeout,
                        max_connections=args.max_connections)
    except (ValueError, OSError) as e:
        print(f"serving.router: {e}", file=sys.stderr)
        return 2
    log_file = quiet.command_log(defaults.output_root, "router")
    print(f"serving.router: {router.url} -> {args.upstream}; logs in {log_file}", flush=True)
    print(f"serving.router: {'read-only' if args.read_only else router.auth.describe()}",
          flush=True)
    with quiet.routed(log_file, level, own=("serving",),
                      own_format="%(asctime)s %(levelname)s %(message)s"):
        router.state.start()
        try:
            router.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            router.server_close()
            router.state.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
