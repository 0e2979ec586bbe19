"""Bounds on what one client can hold of the server and the router: time to send a request,
connections at once, and a JSON answer for every error the HTTP layer itself raises.

Why: both serve one thread per connection. Without a deadline a client that sends its
request a byte at a time (slow loris) keeps a thread as long as it likes, and enough of
them keep every thread; without a cap each connection costs a thread however many come.
So each request has `--request-timeout` seconds from its first byte to its last (a
watchdog closes the connection after answering 408 in JSON, whatever the pace of the
bytes), an idle kept-alive connection is closed after the same time, and beyond
`--max-connections` a new connection is answered 503 with `Retry-After` and closed. Errors
the standard library answers itself (a header line too long: 431, a malformed request
line: 400, an unknown method: 501) are answered as JSON too, as every other error here is.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 64
TURN_AWAY_THREADS = 8  # connections answered 503 at once; beyond that they are just closed
WATCH_SECONDS = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT,
                        help="seconds a client has to send a whole request (headers and "
                             "body); slower: 408 and the connection closed; also how long "
                             f"an idle connection stays open (default {DEFAULT_REQUEST_TIMEOUT:g})")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help="connections served at once; more: 503 with Retry-After "
                             f"(default {DEFAULT_MAX_CONNECTIONS})")


def check(request_timeout: float, max_connections: int) -> None:
    if not request_timeout > 0:
        raise ValueError(f"--request-timeout must be > 0 seconds, got {request_timeout}")
    if max_connections < 1:
        raise ValueError(f"--max-connections must be >= 1, got {max_connections}")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response carrying `{"error": message}`, closing the connection."""
    body = json.dumps({"error": message}).encode()
    reason = HTTPStatus(status).phrase
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class BoundedServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a connection cap and a watchdog over request deadlines."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: connections waiting to be accepted

    def __init__(self, address, handler, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        check(request_timeout, max_connections)
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._active = 0
        self._count_lock = threading.Lock()
        self._turning_away = threading.BoundedSemaphore(TURN_AWAY_THREADS)
        self._deadlines: dict[BoundedHandler, float] = {}
        self._deadline_lock = threading.Lock()
        self._watching = threading.Event()
        super().__init__(address, handler)
        threading.Thread(target=self._watch, name="request-deadlines", daemon=True).start()

    # ------------------------------------------------------------ the connection cap

    @property
    def active_connections(self) -> int:
        return self._active

    def process_request(self, request, client_address) -> None:
        with self._count_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if not full:
            try:
                return super().process_request(request, client_address)
            except BaseException:
                self._release()
                raise
        if self._turning_away.acquire(blocking=False):
            threading.Thread(target=self._turn_away, args=(request,), daemon=True).start()
        else:
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._active -= 1

    def _turn_away(self, request: socket.socket) -> None:
        """503 on a connection over the cap: answered, then closed once the client's request
        is read and dropped (briefly), so it sees the answer and not a reset."""
        try:
            request.settimeout(1.0)
            request.sendall(json_error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"this server is at its limit of {self.max_connections} connections "
                "(--max-connections); try again shortly", {"Retry-After": "1"}))
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and request.recv(1 << 16):
                pass
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
            self._turning_away.release()

    # ------------------------------------------------------------ request deadlines

    def _watch(self) -> None:
        while not self._watching.wait(WATCH_SECONDS):
            now = time.monotonic()
            with self._deadline_lock:
                late = [h for h, d in self._deadlines.items() if d <= now]
                for handler in late:
                    del self._deadlines[handler]
            for handler in late:
                handler.expire()

    def watch(self, handler: BoundedHandler) -> None:
        with self._deadline_lock:
            self._deadlines[handler] = time.monotonic() + self.request_timeout

    def unwatch(self, handler: BoundedHandler) -> bool:
        """False when the watchdog already took the handler (its connection is closing)."""
        with self._deadline_lock:
            return self._deadlines.pop(handler, None) is not None

    def server_close(self) -> None:
        self._watching.set()
        super().server_close()


class BoundedHandler(BaseHTTPRequestHandler):
    """Request handler side of BoundedServer: a deadline from the wait for a request to the
    end of its body, and JSON for the standard library's own errors."""

    server: BoundedServer

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # also bounds each single read
        super().setup()
        self._started = False  # a byte of the current request has arrived
        self._expired = False

    def handle_one_request(self) -> None:
        self._started = False
        self.server.watch(self)
        try:
            super().handle_one_request()
        except OSError:  # the watchdog closed the socket under a read: nothing to answer
            self.close_connection = True
        finally:
            self.server.unwatch(self)

    def parse_request(self) -> bool:
        self._started = True
        ok = super().parse_request()
        if ok and self.command not in ("POST", "PUT", "PATCH"):
            self.done_reading()  # nothing more to read: answering is not on the clock
        return ok

    def done_reading(self) -> None:
        """The request is in: the watchdog lets go of it."""
        if not self.server.unwatch(self):
            self.close_connection = True

    def expire(self) -> None:
        """From the watchdog: the request took too long. Answered 408 when it had begun (an
        idle kept-alive connection is closed without a word), then closed."""
        self._expired = True
        try:
            if self._started:
                self.connection.sendall(json_error(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"the request was not received within {self.server.request_timeout:g} s "
                    "(--request-timeout); send it whole, faster"))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """The standard library's errors (bad request line, header too long, unknown
        method...) as JSON, like every other answer here."""
        self.log_error("code %d, message %s", code, message)
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method nobody here takes: the client's
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, (  # error, not the server's
                f"method {self.command!r} is not taken here: use GET or POST")
            explain = None
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code, message = HTTPStatus.BAD_REQUEST, f"{message}: send HTTP/1.1 or HTTP/1.0"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        text = "; ".join(t for t in (message or phrase, explain) if t)
        self.send_response(code, phrase)
        if code == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, POST")
        body = json.dumps({"error": text}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.close_connection = True
        if code >= 200 and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.RESET_CONTENT,
                                        HTTPStatus.NOT_MODIFIED):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        else:
            self.end_headers()
