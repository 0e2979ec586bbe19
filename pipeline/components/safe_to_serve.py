"""SafeToServe: the serving check between Evaluator and Pusher.

TFX's InfraValidator needs Docker or Kubernetes to start TF Serving and, without them,
fails in ways that are easy to miss. This step asks the same question where neither
exists: load the candidate in a separate process, replay single-row requests built from
real eval rows, and bless it only if every answer is well formed for the task (finite,
of the right shape, probabilities in [0, 1] that sum to 1) and p99 latency and
peak memory fit the budgets in the config. Like InfraValidator with `make_warmup`, it
writes the model with `assets.extra/tf_serving_warmup_requests` into its InfraBlessing
(`has_model`), and the Pusher pushes that copy, so real TF Serving warms up on load too.
"""


import json
import logging
import os
import subprocess
import sys

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

log = logging.getLogger(__name__)

REPORT_FILE = "safe_to_serve.json"
PROBE_TIMEOUT_SECONDS = 600


def eval_rows(examples_uri: str, count: int, split: str = "eval") -> list[dict]:
    from serving.payloads import example_to_row

    files = sorted(fileio.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no {split} examples under {examples_uri}")
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return [example_to_row(r.numpy()) for r in records]


def check(model_path: str, examples_uri: str, output_uri: str, model_name: str,
          warmup_requests: int, latency_p99_budget_ms: float, memory_budget_mib: float) -> dict:
    """Stamps warmup requests into a copy of the model, probes it, judges it. Returns the report."""
    from models import problem as P
    from serving.payloads import WARMUP_FILE, warmup_records

    problem = P.from_model(model_path)  # the contract the model was trained under
    P.adopt(problem)
    stamped = path_utils.stamped_model_path(output_uri)
    io_utils.copy_dir(model_path, stamped)
    warmup_path = os.path.join(stamped, WARMUP_FILE)
    fileio.makedirs(os.path.dirname(warmup_path))
    rows = eval_rows(examples_uri, warmup_requests)
    with tf.io.TFRecordWriter(warmup_path) as writer:
        for record in warmup_records(rows, model_name):
            writer.write(record)

    command = [sys.executable, "-m", "serving.probe", stamped, warmup_path]
    log.info("probing %s with %d warmup requests in a separate process", stamped, len(rows))
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_SECONDS, check=False)
        figures = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 \
            else None
        failure = "" if figures else \
            f"the model failed to load or answer (exit {done.returncode}): {done.stderr[-1500:]}"
    except subprocess.TimeoutExpired:
        figures, failure = None, f"the probe did not finish in {PROBE_TIMEOUT_SECONDS} s"

    reasons = [failure] if failure else list(figures["errors"])
    if figures:
        if figures["p99_ms"] > latency_p99_budget_ms:
            reasons.append(f"p99 latency {figures['p99_ms']:.1f} ms exceeds the budget of "
                           f"{latency_p99_budget_ms:g} ms (latency_p99_budget_ms)")
        if figures["peak_rss_mib"] > memory_budget_mib:
            reasons.append(f"peak memory {figures['peak_rss_mib']:.0f} MiB exceeds the budget of "
                           f"{memory_budget_mib:g} MiB (memory_budget_mib)")
    report = {"blessed": not reasons, "reasons": reasons, "figures": figures or {},
              "budgets": {"latency_p99_ms": latency_p99_budget_ms,
                          "memory_mib": memory_budget_mib},
              "warmup_requests": len(rows), "stamped_model": stamped}
    with fileio.open(os.path.join(output_uri, REPORT_FILE), "w") as f:
        f.write(json.dumps(report, indent=2))
    log.info("safe to serve: %s %s", report["blessed"], "; ".join(reasons) or figures)
    return report


@component
def SafeToServe(
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    examples: InputArtifact[standard_artifacts.Examples],
    infra_blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    model_name: Parameter[str],
    warmup_requests: Parameter[int] = 32,
    latency_p99_budget_ms: Parameter[float] = 50.0,
    memory_budget_mib: Parameter[float] = 2048.0,
    refit: InputArtifact[standard_artifacts.InfraBlessing] = None,
):
    """`model`: the candidate, or with a refit RefitCheck's model, which goes on only if
    `refit` says it passed (or it is the evaluated model, the configured fallback)."""
    skipped = "" if model_blessing.get_int_custom_property("blessed") else \
        "not blessed by the Evaluator; serving check skipped"
    if not skipped and refit is not None and not refit.get_int_custom_property("blessed"):
        skipped = f"the refit failed its guards, nothing to push: " \
                  f"{refit.get_string_custom_property('reason')}"
    if skipped:
        infra_blessing.set_int_custom_property("blessed", 0)
        infra_blessing.set_int_custom_property("has_model", 0)
        infra_blessing.set_string_custom_property("reason", skipped)
        return
    report = check(
        path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model)),
        examples.uri, infra_blessing.uri, model_name, warmup_requests,
        latency_p99_budget_ms, memory_budget_mib)
    infra_blessing.set_int_custom_property("blessed", int(report["blessed"]))
    infra_blessing.set_int_custom_property("has_model", 1)
    infra_blessing.set_string_custom_property("reason", "; ".join(report["reasons"]))
    for name in ("p50_ms", "p99_ms", "peak_rss_mib", "load_seconds"):
        if name in report["figures"]:
            infra_blessing.set_float_custom_property(name, float(report["figures"][name]))
