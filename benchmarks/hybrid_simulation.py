#!/usr/bin/env python
"""Hybrid serving on loopback: does the table's hit rate match what the analysis predicted,
and what does a table hit save against a model call?

The key space is the bundled data: 15,002 trips, keyed `trip_id` 0..15001, requested with
Zipf-distributed popularity (the r-th most requested trip with weight 1/r^s; ranks shuffled).
The local server runs in its own process with `--lookup-key trip_id` and a table path that
does not exist yet, so:

1. history: N requests, every one answered by the model, keys logged;
2. `serving.hybrid analyze` on that request log: static, dynamic or hybrid, table size K,
   predicted hit rate;
3. the top K trips' rows scored by `serving.batch_predict --key trip_id` into the table path;
   the running server loads it;
4. later traffic: N new requests from the same distribution; the `X-Prediction-Source`
   header of each says table or model: the measured hit rate, and latency by source.

Every loop is bounded by its request count and a deadline.

    python benchmarks/hybrid_simulation.py [--requests 10000] [--zipf 1.1]

Figures go to outputs/bench/hybrid.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)
from benchmarks.loopback import Client, free_port, run_and_save, wait_for_server  # noqa: E402

MODEL = "hybrid-bench"
KEY = "trip_id"


def stream(rng, count: int, keys: int, s: float, ranks) -> list[int]:
    import numpy as np

    weights = 1.0 / np.arange(1, keys + 1) ** s
    return [int(ranks[r]) for r in rng.choice(keys, count, p=weights / weights.sum())]


def send(client: Client, rows, trips: list[int], deadline: float) -> tuple[list, int]:
    """(source, milliseconds) per request, and the failures."""
    measured, failures = [], 0
    for trip in trips:
        if time.monotonic() > deadline:
            raise RuntimeError("the deadline passed before the stream ended")
        started = time.perf_counter()
        try:
            _, headers = client.post(f"/v1/models/{MODEL}:predict",
                                     {"instances": [{KEY: trip, **rows[trip]}]})
            measured.append((headers["X-Prediction-Source"],
                             (time.perf_counter() - started) * 1000))
        except (RuntimeError, OSError, KeyError) as e:
            failures += 1
            print(f"request for trip {trip} failed: {e}", file=sys.stderr)
    return measured, failures


def simulate(args: argparse.Namespace) -> dict:
    import numpy as np

    from data.bundled import first_rows
    from models import features as F
    from models.sample_transform import instance, train_and_export, write_transform
    from serving import batch_predict, hybrid

    work = Path(tempfile.mkdtemp(prefix="hybrid-bench-"))
    try:
        labelled = first_rows(15_002)
        transform = write_transform(work / "transform", [instance(r) for r in labelled[:8000]])
        rows = [{k: v for k, v in r.items() if k != F.LABEL_SOURCE} for r in labelled]
        base = work / "serving"
        train_and_export(transform, base / "1", steps=args.train_steps, seed=1, batch_size=64)
        rng = np.random.default_rng(args.seed)
        ranks = rng.permutation(len(rows))
        table = work / "table.parquet"
        log = work / "requests.jsonl"
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--port", str(port), "--model-name", MODEL,
             "--model-base-path", str(base), "--config-dir", "", "--request-log", str(log),
             "--log-sample-rate", "1", "--poll-seconds", "0.5", "--prediction-table", str(table),
             "--lookup-key", KEY], cwd=ROOT,
            env={**os.environ, "TAXI_OUTPUT_ROOT": str(work / "outputs")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + args.max_seconds
        try:
            wait_for_server(port, server, MODEL)
            client = Client(port)
            history, failures = send(client, rows, stream(rng, args.requests, len(rows),
                                                          args.zipf, ranks), deadline)
            keys, without = hybrid.read_request_keys(log)
            profile = hybrid.profile(keys, without, budget_bytes=int(args.budget_mb * 2**20))
            chosen = [int(k) for k in hybrid.top_keys(keys, profile.table_keys)]
            keyed = work / "keyed.csv"
            with keyed.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=[KEY, *rows[0]])
                writer.writeheader()
                writer.writerows({KEY: t, **rows[t]} for t in chosen)
            started = time.monotonic()
            batch = batch_predict.predict_csv(keyed, table, str(base / "1"), key=KEY)
            batch_seconds = time.monotonic() - started
            probe = [{KEY: chosen[0], **rows[chosen[0]]}] if chosen else []
            while probe and client.post(f"/v1/models/{MODEL}:predict", {"instances": probe}
                                        )[1]["X-Prediction-Source"] != "table":
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not load the table")
                time.sleep(0.2)
            later, more = send(client, rows, stream(rng, args.requests, len(rows), args.zipf,
                                                    ranks), deadline)
            failures += more
        finally:
            server.terminate()
            server.wait(timeout=30)
        by_source = {s: [ms for src, ms in later if src == s] for s in ("table", "model")}
        hit_rate = len(by_source["table"]) / len(later) if later else 0.0
        model_history = [ms for _, ms in history]

        def percentiles(values):
            return {"p50": round(float(np.percentile(values, 50)), 2),
                    "p99": round(float(np.percentile(values, 99)), 2)} if values else None

        return {
            "zipf_s": args.zipf, "requests_per_phase": args.requests, "failures": failures,
            "key_space": len(rows),
            "analysis": {**{k: v for k, v in profile.as_dict().items()
                            if k not in ("top_share", "holdout_hit_rate")},
                         "top_share": {str(k): round(v, 4)
                                       for k, v in profile.top_share.items()}},
            "table": {"keys": profile.table_keys, "batch_seconds": round(batch_seconds, 2),
                      "predicted": batch.predicted},
            "hit_rate": {"predicted": round(profile.predicted_hit_rate, 4),
                         "measured": round(hit_rate, 4)},
            "latency_ms": {"table_hit": percentiles(by_source["table"]),
                           "model_call": percentiles(by_source["model"]),
                           "all_model_before_table": percentiles(model_history),
                           "all_with_table": percentiles([ms for _, ms in later])},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from settings import quiet

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests per phase")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--budget-mb", type=float, default=256.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "hybrid.json"))
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    result, log_file = run_and_save(simulate, args, "hybrid", lambda r: r)
    if result is None:
        return 2
    print(f"logs: {log_file}")
    return 0 if result["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
