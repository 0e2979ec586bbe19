"""Every command the README shows prints only its own lines: its --help and one cheap
invocation each, run as a person would from the project root, fail on any line a library
wrote (TensorFlow's C++ log lines, Python logging's records, absl, warnings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from settings.layout import PROJECT_ROOT
from settings.quiet import LIBRARY_LINE

# Commands with settings of their own; the pipeline's runners list the pipeline's, grouped.
HELP_LINES = {"local_runner.py": 300, "vertex_runner.py": 400}
COMMANDS = ["local_runner.py", "vertex_runner.py", "-m serving.server", "-m serving.router",
            "-m serving.rollout", "-m serving.hybrid", "-m serving.batch_predict",
            "-m serving.stream", "-m serving.tflite_example", "-m monitoring.monitor",
            "-m tools.backtest", "-m tools.marks", "-m tools.approval", "-m tools.ablation",
            "-m tools.bootstrap_schema", "-m reporting.report", "-m data.simulator",
            "-m data.bundled", "-m tools.problem", "-m tools.reference", "-m data.public"]

# One cheap invocation each: (command line, its exit status, a line it must print).
VERTEX = ["--gcp-project", "my-project", "--gcp-region", "us-central1", "--image",
          "us-central1-docker.pkg.dev/my-project/taxi/pipeline:1", "--output-root",
          "gs://my-bucket/taxi", "--data-root", "gs://my-bucket/taxi/data"]
CHEAP = [
    ("local_runner.py --data-root {tmp}/empty", 2, "no files match"),
    ("vertex_runner.py --output {tmp}/job.json " + " ".join(VERTEX), 0,
     "compiled taxi-big-tipper for Vertex AI Pipelines"),
    ("-m serving.server --model-base-path {tmp}/none", 2, "does not exist"),
    ("-m serving.router --upstream ftp://x", 2, "give TF Serving's REST address"),
    ("-m serving.rollout status", 0, "pushed versions: none"),
    ("-m serving.hybrid analyze --request-log {tmp}/none.jsonl", 2, "no such request log"),
    ("-m serving.batch_predict --input {tmp}/none.csv --output {tmp}/p.parquet", 2,
     "no pushed model version"),
    ("-m serving.stream --watch {tmp}/none", 2, "no pushed model under"),
    ("-m monitoring.monitor --log {tmp}/none.jsonl", 2, "no request log"),
    ("-m tools.backtest --data-root {tmp}/empty", 2, "no data files"),
    ("-m tools.marks list", 0, "active marks (0)"),
    ("-m tools.approval list", 0, "waiting for approval (0)"),
    ("-m tools.ablation", 2, "run the pipeline first"),
    ("-m tools.bootstrap_schema --data-root {tmp}/empty --out {tmp}/inferred", 2, "no files"),
    ("-m reporting.report --list", 2, "run the pipeline first"),
    ("-m data.simulator --out {tmp}/sim --span 1 --rows 20", 0, "span 1: 20 rows"),
    ("-m tools.problem init --data {tmp}/empty --label y --out {tmp}/p", 2, "no files under"),
    ("-m tools.reference", 2, "no ExampleGen output"),
    ("-m data.public materialize nope", 2, "no public table 'nope'"),
]


def run(command: str, tmp: Path) -> subprocess.CompletedProcess:
    """As typed in the project root, with outputs under `tmp`."""
    (tmp / "empty").mkdir(exist_ok=True)
    args = [sys.executable, *command.format(tmp=tmp).split()]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TAXI_") and k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "TAXI_OUTPUT_ROOT": str(tmp / "outputs")})


def library_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines()
            if LIBRARY_LINE.search(line)]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_quiet_and_short(command, tmp_path):
    result = run(f"{command} --help", tmp_path)
    assert result.returncode == 0, result.stderr
    assert library_lines(result) == [], result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) <= HELP_LINES.get(command, 130), f"{len(lines)} lines of --help"
    usage = [line for line in lines[:12] if line.strip()]
    assert usage[0].startswith("usage:")
    assert not any(line.startswith("usage:") for line in usage[8:])


@pytest.mark.parametrize("command,status,says", CHEAP,
                         ids=[c[0].removeprefix("-m ").split()[0] for c in CHEAP])
def test_a_cheap_invocation_prints_only_its_own_lines(command, status, says, tmp_path):
    result = run(command, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert says in output
    assert library_lines(result) == [], output
    assert len(output.splitlines()) <= 8, output


def test_verbose_brings_the_library_logs_back(tmp_path):
    quiet = run("vertex_runner.py --output {tmp}/job.json " + " ".join(VERTEX), tmp_path)
    loud = run("vertex_runner.py --verbose --output {tmp}/job.json " + " ".join(VERTEX),
               tmp_path)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert library_lines(quiet) == []
    assert len(library_lines(loud)) >= 5, loud.stderr
    log_file = next(line.split(": ", 1)[1] for line in quiet.stdout.splitlines()
                    if line.startswith("library logs: "))
    assert Path(log_file).parent == tmp_path / "logs"  # beside the job it compiled
    logged = subprocess.CompletedProcess([], 0, Path(log_file).read_text(), "")
    assert len(library_lines(logged)) >= 5
