"""Load a SavedModel and replay TF Serving warmup requests against it; print figures as JSON.

Run as its own process (`python -m serving.probe MODEL_DIR WARMUP_FILE`) by the
safe-to-serve step, so load time and peak memory are those of a process that serves
this model and nothing else.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time

import numpy as np

import models  # noqa: F401  (Keras 2 before TensorFlow)


def probe(model_dir: str, warmup_file: str, repeats: int = 3) -> dict:
    import tensorflow as tf

    from models.model import PROBABILITY
    from serving import payloads

    started = time.perf_counter()
    model = tf.saved_model.load(model_dir)
    load_seconds = time.perf_counter() - started
    calls = payloads.warmup_calls(model, warmup_file)
    if not calls:
        raise ValueError(f"no warmup requests in {warmup_file}")
    errors: list[str] = []
    for i, (signature, tensors) in enumerate(calls):  # first pass: warm, and check answers
        values = signature(**tensors)[PROBABILITY].numpy()
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values.ravel()):
            errors.append(f"request {i}: probabilities outside [0, 1]: {values.tolist()}")
    latencies = []
    for _ in range(repeats):
        for signature, tensors in calls:
            t0 = time.perf_counter()
            signature(**tensors)
            latencies.append((time.perf_counter() - t0) * 1000.0)
    return {
        "requests": len(calls),
        "timed_calls": len(latencies),
        "load_seconds": round(load_seconds, 3),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.probe", description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("warmup_file")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the requests")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.model_dir, args.warmup_file, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
