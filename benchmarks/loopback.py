"""What the loopback simulations share: a keep-alive client, a free port, waiting for the
server process, and a quiet run that saves its figures."""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive connection, as a service calling the model would hold."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict, headers: dict[str, str] | None = None):
        self.connection.request("POST", path, json.dumps(body),
                                {"Content-Type": "application/json", **(headers or {})})
        response = self.connection.getresponse()
        data = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data}")
        return data, response.headers


def wait_for_server(port: int, process, model: str, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{model}",
                                        timeout=5) as response:
                if json.loads(response.read())["model_version_status"]:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("the local server did not start")
        time.sleep(0.5)


def run_and_save(simulate: Callable[[argparse.Namespace], dict], args: argparse.Namespace,
                 name: str, shown: Callable[[dict], dict]) -> tuple[dict | None, Path]:
    """`simulate(args)` with the quiet terminal (logs to outputs/logs), its figures written
    to `args.out` and the `shown` part printed; (None, log) when it stopped on an error."""
    from settings import quiet

    result, error, log_file = quiet.run_quietly(lambda: simulate(args), args,
                                                str(ROOT / "outputs"), f"bench-{name}", (), "")
    if error is not None:
        print(f"{name}: {error}", file=sys.stderr)
        return None, log_file
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(shown(result), indent=2))
    return result, log_file
