"""The headline benchmark is code that is tested: its cheap path runs TFX's own taxi example
(exactly as shipped, in its own process) on a small sample and reads back what stock TFX
components wrote to ML Metadata, as `make bench` does. Stock TFX writes none of this
project's extra files (the Trainer's history.json), which once ended `make bench` in a
NotFoundError before it printed anything."""

import importlib.util

from data import bundled
from reporting import run_summary, runs
from settings.layout import PROJECT_ROOT


def _bench():
    path = PROJECT_ROOT / "benchmarks" / "e2e_vs_tfx_example.py"
    spec = importlib.util.spec_from_file_location("e2e_vs_tfx_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_reads_what_tfx_s_own_example_writes(tmp_path):
    bench = _bench()
    data = tmp_path / "data"
    data.mkdir()
    lines = bundled.materialize().read_text().splitlines()
    (data / "data.csv").write_text("\n".join(lines[:601]) + "\n")  # the header and 600 rows
    info = bench.run_side("reference", tmp_path / "out", str(data))
    times = bench.component_times(info)
    ran = ("ExampleGen", "Transform", "Trainer", "Evaluator")
    assert all(times.get(n, {}).get("state") == "ran" and times[n]["seconds"] > 0
               for n in ran), times
    summary = runs.summarize(info["metadata_path"], info["pipeline_name"])
    assert 0.0 <= summary.metrics["binary_accuracy"] <= 1.0, summary.metrics  # its Evaluator
    assert run_summary.format_summary(summary)  # the lines make bench prints
