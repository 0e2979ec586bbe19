#!/usr/bin/env python
"""Generated requests against the real server and router, more of them than the suite sends.

Starts `serving.server` (loopback, no credential) and `serving.router` (with one) over a
bandit of two small models, as serving/write_paths_test.py does, and sends N requests
Hypothesis writes (serving/generated_requests_test.py's strategies) to each, as raw bytes.
Prints how many were sent, how the answers were spread by status, the slowest answer, and
every one that broke the rule (a 5xx other than 503, a 4xx without a JSON error, a hang).

    python benchmarks/generated_requests.py [--count 2000]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="requests per process")
    args = parser.parse_args()

    from hypothesis import HealthCheck, given, settings

    from data import bundled
    from models.preprocessing_test import ROWS
    from models.sample_transform import train_and_export, write_transform
    from serving.conftest import Served
    from serving.generated_requests_test import check_answer, requests, send

    _, bundled_rows = bundled.read_rows(bundled.materialize())
    row = {k: v for k, v in bundled_rows[0].items() if k != "tips"}
    root = Path(tempfile.mkdtemp(prefix="generated-requests-"))
    transform = write_transform(root / "transform", ROWS * 8)
    exported = [train_and_export(transform, root / "a", steps=3, seed=1),
                train_and_export(transform, root / "b", steps=6, seed=2)]
    served = Served(root / "served", exported,
                    server_args=("--request-timeout", "3"), router_args=("--request-timeout", "3"))
    failures = 0
    try:
        for via in ("server", "router"):
            statuses: collections.Counter = collections.Counter()
            broken: list[str] = []
            slowest = [0.0]
            port = served.ports[via]

            @settings(max_examples=args.count, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(requests(row))
            def one(request):
                started = time.monotonic()
                try:
                    response = send(port, request)  # noqa: B023 - called within this loop turn
                    statuses[response.status] += 1  # noqa: B023
                    check_answer(response, request)
                except (AssertionError, TimeoutError, ValueError) as e:
                    broken.append(f"{type(e).__name__}: {str(e)[:300]}")  # noqa: B023
                slowest[0] = max(slowest[0], time.monotonic() - started)  # noqa: B023

            started = time.monotonic()
            one()
            took = time.monotonic() - started
            sent = sum(statuses.values())
            print(f"{via}: {sent:,} generated requests in {took:.1f} s, slowest answer "
                  f"{slowest[0] * 1000:.0f} ms; by status: "
                  + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
            print(f"{via}: {len(broken)} broke the rule; still serving: {served.alive()}")
            for line in broken[:10]:
                print(f"  {line}")
            failures += len(broken) + (not served.alive())
    finally:
        served.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
