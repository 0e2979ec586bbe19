"""Load a SavedModel and replay TF Serving warmup requests against it; print figures as JSON.

Run as its own process (`python -m serving.probe MODEL_DIR WARMUP_FILE`) by the
safe-to-serve step, so load time and peak memory are those of a process that serves
this model and nothing else.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

import models  # noqa: F401  (Keras 2 before TensorFlow)


def probe(model_dir: str, warmup_file: str, repeats: int = 3) -> dict:
    import tensorflow as tf

    from models import problem as P
    from models.model import output_key
    from serving import payloads

    problem = P.from_model(model_dir)
    P.adopt(problem)
    task = P.current().task
    started = time.perf_counter()
    model = tf.saved_model.load(model_dir)
    load_seconds = time.perf_counter() - started
    calls = payloads.warmup_calls(model, warmup_file)
    if not calls:
        raise ValueError(f"no warmup requests in {warmup_file}")
    errors: list[str] = []
    for i, (signature, tensors) in enumerate(calls):  # first pass: warm, and check answers
        outputs = signature(**tensors)
        rows = next(iter(tensors.values())).shape[0]
        problem_with = answer_problem(task, outputs[output_key(task)].numpy(), rows,
                                      P.current().num_classes)
        if problem_with:
            errors.append(f"request {i}: {problem_with}")
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


def answer_problem(task: str, values: np.ndarray, rows: int, classes: int) -> str:
    """What is wrong with a model's answer to `rows` rows ("" when nothing): finite, of the
    right shape, probabilities in [0, 1] (class probabilities summing to 1)."""
    expected = (rows, classes) if task == "multiclass" else (rows,)
    if values.shape != expected:
        return f"answer of shape {list(values.shape)}, expected {list(expected)}"
    if not np.all(np.isfinite(values)):
        return f"non-finite answers: {values.tolist()}"
    if task == "regression":
        return ""
    if np.any(values < 0.0) or np.any(values > 1.0):
        return f"probabilities outside [0, 1]: {values.tolist()}"
    if task == "multiclass" and not np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        return f"class probabilities that do not sum to 1: {values.sum(axis=1).tolist()}"
    return ""


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
