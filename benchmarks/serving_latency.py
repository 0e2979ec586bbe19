#!/usr/bin/env python
"""Serving latency and throughput: in-process vs the local REST server, same SavedModel.

  in-process    single-row predict through the raw signature (what TF Serving's own
                session run costs, without HTTP), p50/p99 over N calls
  REST          the local server in its own process on loopback; one client in sequence
                (latency), then C concurrent clients for a bounded number of requests
                (p50/p99 under load, QPS)
  batch         rows/s for batches of 1,000 rows in-process and 100 rows over REST

    python benchmarks/serving_latency.py [--model-dir DIR] [--requests 3000] [--clients 4]

Default model: the newest version under the serving dir (`make run` pushes one).
Figures go to outputs/bench/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)


def percentiles(ms: list[float]) -> dict:
    import numpy as np

    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "n": len(ms)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(model_dir: str, rows: list[dict], calls: int) -> dict:
    import tensorflow as tf

    from models import model as M

    model = tf.saved_model.load(model_dir)
    signature = model.signatures["serving_default"]
    singles = [M.raw_inputs([rows[i % len(rows)]]) for i in range(calls)]
    for inputs in singles[:50]:
        signature(**inputs)
    ms = []
    for inputs in singles:
        t0 = time.perf_counter()
        signature(**inputs)
        ms.append((time.perf_counter() - t0) * 1000)
    batch = M.raw_inputs((rows * (1000 // len(rows) + 1))[:1000])
    signature(**batch)
    t0 = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        signature(**batch)
    rows_per_s = 1000 * repeats / (time.perf_counter() - t0)
    return {"single_row": percentiles(ms), "batch_1000_rows_per_s": round(rows_per_s)}


def rest(model_dir: str, rows: list[dict], requests: int, clients: int) -> dict:
    from serving.client import ServingClient

    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    shutil.copytree(model_dir, work / "models" / "1")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port", str(port), "--model-name", "bench",
         "--model-base-path", str(work / "models"), "--config-dir", str(work / "config"),
         "--request-log", "", "--log-level", "WARNING"], cwd=ROOT)
    try:
        client = ServingClient("127.0.0.1", "bench", rest_port=port, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.status()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the local server did not start") from None
                time.sleep(0.5)
        for i in range(50):
            client.predict([rows[i % len(rows)]])
        sequential = []
        for i in range(min(requests, 1000)):
            t0 = time.perf_counter()
            client.predict([rows[i % len(rows)]])
            sequential.append((time.perf_counter() - t0) * 1000)

        per_client = requests // clients
        loaded: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def load(offset: int) -> None:
            own = ServingClient("127.0.0.1", "bench", rest_port=port, timeout=30)
            ms = []
            for i in range(per_client):
                t0 = time.perf_counter()
                try:
                    own.predict([rows[(offset + i) % len(rows)]])
                except Exception as e:  # noqa: BLE001 - counted, not fatal
                    errors.append(repr(e))
                ms.append((time.perf_counter() - t0) * 1000)
            with lock:
                loaded.extend(ms)

        threads = [threading.Thread(target=load, args=(k * 97,)) for k in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        elapsed = time.perf_counter() - t0
        batch = (rows * (100 // len(rows) + 1))[:100]
        client.predict(batch)
        t1 = time.perf_counter()
        for _ in range(20):
            client.predict(batch)
        batch_rows_per_s = 100 * 20 / (time.perf_counter() - t1)
        return {"sequential_single_row": percentiles(sequential),
                "under_load": {**percentiles(loaded), "clients": clients,
                               "qps": round(len(loaded) / elapsed, 1), "errors": len(errors)},
                "batch_100_rows_per_s": round(batch_rows_per_s)}
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from data import bundled
    from pipeline import configs
    from serving import versions

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a SavedModel (default: newest pushed version)")
    parser.add_argument("--requests", type=int, default=3000, help="requests under load")
    parser.add_argument("--clients", type=int, default=2, help="concurrent REST clients")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "serving.json"))
    args = parser.parse_args(argv)

    model_dir = args.model_dir
    if not model_dir:
        serving_dir = configs.load().serving_dir
        pushed = versions.pushed_versions(serving_dir)
        if not pushed:
            print(f"no pushed model under {serving_dir}; run `make run` first or pass "
                  "--model-dir", file=sys.stderr)
            return 2
        model_dir = os.path.join(serving_dir, str(pushed[-1]))
    _, all_rows = bundled.read_rows(bundled.materialize())
    rows = [{k: v for k, v in r.items() if k != "tips"} for r in all_rows[:200]]

    print(f"model: {model_dir}  ({os.cpu_count()} cores)")
    results = {"model_dir": model_dir, "cores": os.cpu_count(),
               "in_process": in_process(model_dir, rows, calls=2000)}
    print("in-process single row:", results["in_process"]["single_row"],
          " batch of 1000:", results["in_process"]["batch_1000_rows_per_s"], "rows/s")
    results["rest"] = rest(model_dir, rows, args.requests, args.clients)
    print("REST sequential single row:", results["rest"]["sequential_single_row"])
    print("REST under load:", results["rest"]["under_load"])
    print("REST batch of 100:", results["rest"]["batch_100_rows_per_s"], "rows/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("written:", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
