"""Continuous training on new spans, driven the way a scheduler would: `local_runner --watch`.

Span 1 trains and pushes; span 2 (drawn from the same distribution) retrains on the window
of both spans, warm-started from span 1's model with recency weights, is compared with that
baseline and pushed as a new version; span 3 (fares inflated, payments moved to cash) breaches
the drift thresholds against span 2 (the data behind the last blessed model) and stops
before training: nothing is pushed and the
report names the drifted features. A further poll finds nothing new to do.
"""

import json
import os
import re
from pathlib import Path

import pytest

import local_runner
from data import bundled, simulator
from pipeline import configs
from reporting import runs

SPAN_ROWS = 1500


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("spans")
    source = bundled.materialize()
    args = ["--watch", str(root / "spans"), "--once", "--settle-seconds", "0",
            "--output-root", str(root / "out"), "--train-steps", "200", "--training-spans", "2",
            "--warm-start", "--recency-half-life", "1", "--analyzer-cache", "--no-safe-to-serve",
            "--min-auc", "0.8", "--max-auc-drop", "0.05"]  # the flow is under test, not quality
    config = configs.load(env={}, output_root=str(root / "out"))
    return root / "spans", source, args, config


def _span(spans, source, number, seed, changes=()):
    simulator.write_span(spans, number, SPAN_ROWS, seed=seed, source=source,
                         changes=[simulator.parse_change(c) for c in changes])


def _runs(config):
    return len(runs.pipeline_runs(runs.connect(config.metadata_path),
                                         config.pipeline_name))


def _versions(config):
    return sorted(os.listdir(config.serving_dir)) if os.path.isdir(config.serving_dir) else []


def test_span_1_trains_and_pushes(setup, capsys):
    spans, source, args, config = setup
    _span(spans, source, 1, seed=1)
    assert local_runner.main(args) == 0
    summary = runs.summarize(config.metadata_path, config.pipeline_name)
    assert summary.data_source["span"] == 1 and summary.window_spans == [1]
    assert summary.drift["baseline_span"] is None  # nothing to compare with yet
    assert summary.pushed and len(_versions(config)) == 1
    terminal = capsys.readouterr()
    assert "Drift: span 1 has no blessed model's data or previous span" in terminal.out
    # The console: one line per component with its figure; other libraries' logs, warnings
    # and C++ output are in the run's log file, not on the terminal.
    lines = {line.split()[0]: line for line in terminal.out.splitlines()
             if line.startswith("  ") and len(line.split()) > 3 and line.split()[1] in
             ("ran", "cached", "skipped", "FAILED")}
    assert {"SpanExamples", "Transform", "Trainer", "Evaluator", "Pusher"} <= set(lines)
    assert re.search(r"Evaluator +ran +[\d.]+ s  AUC 0\.\d{4}, blessed$", lines["Evaluator"])
    assert f"pushed {summary.pushed_destination}" in lines["Pusher"]
    assert "WARNING" not in terminal.out + terminal.err and terminal.err == ""
    log_file = Path(terminal.out.split("Log: ")[1].split()[0])
    assert log_file.parent == Path(config.pipeline_root) / "logs"
    assert "Component Trainer is running." in log_file.read_text()


def test_clean_span_2_retrains_warm_on_the_window_and_pushes_a_new_version(setup):
    spans, source, args, config = setup
    first = runs.summarize(config.metadata_path, config.pipeline_name)
    _span(spans, source, 2, seed=2)
    assert local_runner.main(args) == 0
    summary = runs.summarize(config.metadata_path, config.pipeline_name)
    assert summary.data_source["span"] == 2 and summary.window_spans == [2, 1]
    assert summary.drift["baseline_span"] == 1 and summary.drift["breached"] == []
    assert "the data behind the last blessed model" in summary.drift["baseline"]
    assert len(summary.drift["features"]) >= 15  # every compared feature has a distance
    assert "auc" in summary.baseline_metrics  # compared with span 1's blessed model
    assert summary.blessed and summary.pushed and len(_versions(config)) == 2
    with open(f"{summary.artifacts['Trainer']['ModelRun']}/history.json") as f:
        history = json.load(f)
    # Warm-started from the model span 1 pushed, with span 2 weighted twice span 1.
    assert history["warm_start"].startswith(first.artifacts["Trainer"]["Model"])
    newest, older = history["recency_weights"]
    assert newest == pytest.approx(2 * older)
    # Transform was handed span 1's analyzer cache, keyed by span 1 (not by the window that
    # held it then): span 1's entry carries over and only span 2's is new.
    first_cache = set(os.listdir(first.artifacts["Transform"]["TransformCache"]))
    cache = set(os.listdir(summary.artifacts["Transform"]["TransformCache"]))
    assert [k for k in first_cache if k.startswith("span-")] == \
        [k for k in cache if k.startswith("span-1-")]
    assert len([k for k in cache if k.startswith("span-2-")]) == 1


def test_drifted_span_3_stops_before_training_and_pushes_nothing(setup, capsys):
    spans, source, args, config = setup
    before = _versions(config)
    _span(spans, source, 3, seed=3, changes=["fare_inflation=1.6", "payment_shift=Cash:0.3"])
    assert local_runner.main(args) == 2
    err = capsys.readouterr().err
    assert "drift beyond the schema's thresholds" in err
    assert "feature 'fare': Jensen-Shannon" in err
    assert "(span 3 vs span 2, the data behind the last blessed model" in err
    assert "feature 'payment_type': L-infinity" in err
    summary = runs.summarize(config.metadata_path, config.pipeline_name)
    states = {c.node_id: c.state for c in summary.components}
    assert states["AnomalyGate"] == "FAILED" and "Trainer" not in states
    assert {"fare", "payment_type"} <= set(summary.drift["breached"])
    assert _versions(config) == before
    with open(err.split("Report: ")[1].split()[0], encoding="utf-8") as f:
        page = f.read()
    assert "Drift against the data in service" in page and "fare, " in page
    assert runs.finished_spans(config.metadata_path, config.pipeline_name) == {
        1: "pushed", 2: "pushed", 3: "stopped by data validation"}


def test_watching_again_trains_nothing_twice(setup, capsys):
    spans, _, args, config = setup
    runs = _runs(config)
    assert local_runner.main(args) == 0
    assert _runs(config) == runs
    assert "training run" not in capsys.readouterr().out


def test_ready_spans_skip_half_written_and_fresh_directories(tmp_path):
    (tmp_path / "span-1").mkdir()
    (tmp_path / "span-1" / "data.csv").write_text("a\n1\n")
    (tmp_path / "span-2").mkdir()
    (tmp_path / "span-2" / "data.tmp").write_text("a\n")  # still being written
    (tmp_path / "span-3").mkdir()  # empty
    (tmp_path / "notes").mkdir()
    assert local_runner.ready_spans(tmp_path, settle_seconds=0) == [1]
    mtime = os.stat(tmp_path / "span-1" / "data.csv").st_mtime
    assert local_runner.ready_spans(tmp_path, settle_seconds=60, now=mtime + 30) == []
