"""Fixtures the serving tests share."""

import pytest

from data import bundled
from models import features as F


@pytest.fixture(scope="module")
def rows():
    """Real raw rows from the bundled data, as a caller would send them (no tip)."""
    _, all_rows = bundled.read_rows(bundled.materialize())
    return [{k: v for k, v in r.items() if k != F.LABEL_SOURCE} for r in all_rows[:64]]


class Served:
    """`python -m serving.server` with `python -m serving.router` in front, started as the
    README tells an operator: the server on loopback with no credential, the router with a
    credential file, both over one rollout config dir holding a bandit over versions 1, 2."""

    def __init__(self, root, exported_models, server_args=(), router_args=()):
        import os
        import subprocess
        import sys

        from models.local_cluster import free_ports
        from serving.rollout import Rollouts
        from serving.server_test import MODEL, push

        self.model = MODEL
        self.root = root
        self.base, self.config = root / "serving", root / "config"
        push(exported_models[0], self.base, 1)
        push(exported_models[1], self.base, 2)
        Rollouts(MODEL, self.base, self.config).start_bandit([1, 2], None, reward="accuracy",
                                                              floor=0.05)
        self.secret = "s3cr3t-" + os.urandom(16).hex()
        self.tokens = root / "tokens"
        self.tokens.write_text(f"labeller {self.secret}\n")
        self.tokens.chmod(0o600)
        env = {**os.environ, "TAXI_OUTPUT_ROOT": str(root / "out")}
        self.control = root / "out" / "control" / "taxi-big-tipper"
        server_port, router_port = free_ports(2)
        common = ["--model-name", MODEL, "--config-dir", str(self.config),
                  "--poll-seconds", "0.2"]
        self.logs = [root / "server.log", root / "router.log"]
        outs = [open(log, "w") for log in self.logs]  # noqa: SIM115 - the processes keep them
        self.processes = [
            subprocess.Popen([sys.executable, "-m", "serving.server", "--port", str(server_port),
                              "--model-base-path", str(self.base), "--request-log", "",
                              *common, *server_args],
                             stdout=outs[0], stderr=subprocess.STDOUT, env=env),
            subprocess.Popen([sys.executable, "-m", "serving.router", "--port", str(router_port),
                              "--upstream", f"http://127.0.0.1:{server_port}",
                              "--write-tokens-file", str(self.tokens), *common, *router_args],
                             stdout=outs[1], stderr=subprocess.STDOUT, env=env)]
        self.ports = {"server": server_port, "router": router_port}
        for name, port in self.ports.items():
            self._wait(name, port)

    def url(self, via: str) -> str:
        return f"http://127.0.0.1:{self.ports[via]}"

    def _wait(self, name: str, port: int, seconds: float = 120) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for process, log in zip(self.processes, self.logs, strict=True):
                if process.poll() is not None:
                    raise AssertionError(f"{log.name} ended: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{self.model}",
                                            timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the {name} did not answer within {seconds:.0f} s")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except Exception:  # noqa: BLE001 - a process that will not end is killed
                process.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported_models):
    served = Served(tmp_path_factory.mktemp("served"), exported_models,
                    server_args=("--request-timeout", "3", "--max-connections", "24"),
                    router_args=("--request-timeout", "3", "--max-connections", "24"))
    yield served
    served.stop()
