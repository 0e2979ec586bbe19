#!/usr/bin/env python
"""Streaming predictions against one REST call per event, at the same offered rate, in one
run: events/s scored and event-to-prediction latency (p50, p99).

  stream   `python -m serving.stream --watch DIR` (the folder source's event-time loop) in
           its own process; events land as a JSONL file every --tick seconds, each with its
           event time = the moment it was written; latency = the warehouse row's processing
           time - that
  REST     the local server in its own process; one keep-alive client calls :predict once
           per event at the same pace; latency = the answer's time - the event's (its round
           trip, and the wait behind earlier events when the client falls behind)

    python benchmarks/streaming.py [--rate 200] [--seconds 20] [--model-dir DIR]

Default model: the newest version under the serving dir (`make run` pushes one). Figures go
to outputs/bench/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loopback import Client, free_port, run_and_save, wait_for_server  # noqa: E402
from benchmarks.serving_latency import percentiles  # noqa: E402
from data import bundled  # noqa: E402

MODEL = "taxi-big-tipper"


def offered(rows: list[dict], rate: float, seconds: float, tick: float):
    """(due time, batch of rows) every `tick` seconds: `rate` events a second."""
    per_tick, start, sent = max(1, round(rate * tick)), time.time(), 0
    for step in range(int(seconds / tick)):
        due = start + step * tick
        yield due, [rows[(sent + i) % len(rows)] for i in range(per_tick)]
        sent += per_tick


def run_stream(serving_dir: str, rows: list[dict], rate: float, seconds: float, tick: float,
               work: Path) -> dict:
    incoming, out = work / "incoming", work / "out"
    incoming.mkdir(parents=True)
    job = subprocess.Popen(
        [sys.executable, "-m", "serving.stream", "--watch", str(incoming), "--out", str(out),
         "--serving-dir", serving_dir, "--stop-after", str(seconds + 90), "--interval",
         str(tick), "--window-seconds", "10", "--poll-seconds", "3600"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(30)  # start-up: TensorFlow, Beam, the model (not part of the figures)
    count = 0
    for n, (due, batch) in enumerate(offered(rows, rate, seconds, tick)):
        time.sleep(max(0.0, due - time.time()))
        now = time.time()
        tmp = incoming / f".{n}.tmp"
        tmp.write_text("".join(json.dumps({"key": f"{n}-{i}", "event_time": now, **r}) + "\n"
                               for i, r in enumerate(batch)))
        tmp.rename(incoming / f"{n:06d}.jsonl")
        count += len(batch)
    job.send_signal(signal.SIGTERM)  # it reads what has landed, then ends
    job.communicate(timeout=seconds + 180)
    import pandas as pd

    table = pd.concat(pd.read_parquet(f) for f in (out / "predictions").glob("*/*.parquet"))
    latency = ((table["processing_time"] - table["event_time"]) * 1000).tolist()
    span = table["processing_time"].max() - table["processing_time"].min()
    return {"offered": count, "scored": len(table), "events_per_s": round(len(table) / span, 1),
            **percentiles(latency)}


def run_rest(serving_dir: str, rows: list[dict], rate: float, seconds: float,
             tick: float) -> dict:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port", str(port), "--model-base-path",
         serving_dir, "--model-name", MODEL, "--request-log", "", "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_server(port, server, MODEL)
        client, latency, started = Client(port), [], time.time()
        for due, batch in offered(rows, rate, seconds, tick):
            time.sleep(max(0.0, due - time.time()))
            for row in batch:
                client.post(f"/v1/models/{MODEL}:predict", {"instances": [row]})
                latency.append((time.time() - due) * 1000)
        elapsed = time.time() - started
    finally:
        server.terminate()
        server.wait(30)
    return {"offered": len(latency), "scored": len(latency),
            "events_per_s": round(len(latency) / elapsed, 1), **percentiles(latency)}


def simulate(args: argparse.Namespace) -> dict:
    from serving import versions
    from settings.layout import Layout

    serving_dir = args.model_dir
    if not serving_dir:
        serving_dir = Layout.load().serving_dir
        if versions.newest_version(serving_dir) is None:
            raise ValueError(f"no pushed model under {serving_dir}: run `make run` first")
    _, all_rows = bundled.read_rows(bundled.materialize())
    rows = [{k: v for k, v in r.items() if k != "tips"} for r in all_rows[:1000]]
    with tempfile.TemporaryDirectory() as tmp:
        streamed = run_stream(serving_dir, rows, args.rate, args.seconds, args.tick, Path(tmp))
    rest = run_rest(serving_dir, rows, args.rate, args.seconds, args.tick)
    return {"rate": args.rate, "seconds": args.seconds, "tick": args.tick,
            "stream": streamed, "rest": rest}


def main(argv: list[str] | None = None) -> int:
    from settings import quiet

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="events offered a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long they come")
    parser.add_argument("--tick", type=float, default=0.25,
                        help="events land every this many seconds (a file, a batch of calls)")
    parser.add_argument("--model-dir", default="", help="a serving dir (default SERVING_DIR)")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "streaming.json"))
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    result, _ = run_and_save(simulate, args, "streaming", lambda r: r)
    return 0 if result else 2


if __name__ == "__main__":
    sys.exit(main())
