#!/usr/bin/env python
"""ExampleGen alone: ArrowExampleGen against TFX's CsvExampleGen, on the same files, in one run.

For each size (the bundled 15,002 rows, and simulated rows drawn from them), each executor
runs in a fresh process (Beam DirectRunner in_memory, as `make run` runs it) while a thread
samples its RSS; wall seconds and peak RSS are printed per executor, with the ratio, and the
records are checked to be the same in the same splits.

    python benchmarks/example_gen.py [--rows 15002,1000000] [--out DIR] [--skip-tfx-above N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)

EXECUTORS = {
    "arrow": "pipeline.components.arrow_example_gen:Executor",
    "tfx-csv": "tfx.components.example_gen.csv_example_gen.executor:Executor",
    # The same executor with its blocks shared by two Beam worker threads.
    "arrow-2-threads": "pipeline.components.arrow_example_gen:Executor",
}
THREADS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]


def one(executor: str, data_dir: str, out: str) -> dict:
    """Runs one executor here (the child process), returning its seconds and peak RSS."""
    import importlib

    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as keys
    from tfx.utils import proto_utils

    from benchmarks.scale import RssSampler
    from pipeline import configs
    from pipeline import pipeline as dag
    from pipeline.components.arrow_example_gen import ArrowExampleGen
    from settings.layout import SCHEMA_FILE

    module, name = EXECUTORS[executor].split(":")
    executor_class = getattr(importlib.import_module(module), name)
    examples = standard_artifacts.Examples()
    examples.uri = out
    component = ArrowExampleGen(input_base=data_dir,
                                schema_file=str(SCHEMA_FILE))
    properties = {
        keys.INPUT_BASE_KEY: data_dir,
        keys.INPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="single_split", pattern="*")])),
        keys.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
            dag.output_config(configs.load(env={}))),
        keys.CUSTOM_CONFIG_KEY: component.exec_properties[keys.CUSTOM_CONFIG_KEY],
    }
    import psutil

    before_mib = psutil.Process().memory_info().rss / 2**20  # TensorFlow, TFX, Beam loaded
    sampler = RssSampler(every=0.1)
    sampler.start()
    start_ms = time.time() * 1000
    started = time.monotonic()
    executor_class(beam_pipeline_args_from_config(
        THREADS if executor.endswith("-threads") else None)).Do(
        {}, {keys.EXAMPLES_KEY: [examples]}, properties)
    seconds = time.monotonic() - started
    sampler.running = False
    return {"seconds": round(seconds, 1),
            "peak_rss_mib": sampler.peak_mib(start_ms, time.time() * 1000),
            "rss_before_mib": round(before_mib, 1)}


def beam_pipeline_args_from_config(mode: list[str] | None = None):
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    from pipeline import configs

    args = [a for a in configs.load(env={}).beam_pipeline_args
            if not (mode and a.startswith(("--direct_running_mode", "--direct_num_workers")))]
    return BaseBeamExecutor.Context(beam_pipeline_args=args + (mode or []))


def same_records(a: Path, b: Path) -> bool:
    import tensorflow as tf

    def read(uri: Path, split: str) -> list[bytes]:
        files = sorted(str(p) for p in (uri / f"Split-{split}").glob("*"))
        return sorted(tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
                      for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))

    return all(read(a, s) == read(b, s) for s in ("train", "eval"))


def run_one(executor: str, data_dir: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--one", executor, str(data_dir), str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("EXAMPLEGEN-RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{executor} on {data_dir} failed (exit {proc.returncode})")
    return json.loads(lines[-1].removeprefix("EXAMPLEGEN-RESULT "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="15002,1000000",
                        help="sizes, comma-separated; 15002 = the bundled file itself")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "example_gen")
    parser.add_argument("--skip-tfx-above", type=int, default=0,
                        help="run only ArrowExampleGen above this many rows (0 = never skip)")
    parser.add_argument("--one", nargs=3, metavar=("EXECUTOR", "DATA_DIR", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("EXAMPLEGEN-RESULT " + json.dumps(one(*args.one)), flush=True)
        return 0

    from data import bundled, simulator

    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        if rows == 15002:
            data_dir = bundled.materialize().parent
        else:
            data_dir = simulator.write_span(args.out / f"data-{rows}", 1, rows,
                                            seed=rows % 997).parent
        size_mib = sum(p.stat().st_size for p in data_dir.glob("*") if p.is_file()) / 2**20
        result = {"rows": rows, "csv_mib": round(size_mib, 1)}
        for executor in EXECUTORS:
            if executor == "tfx-csv" and args.skip_tfx_above and rows > args.skip_tfx_above:
                continue
            result[executor] = run_one(executor, data_dir, args.out / f"{executor}-{rows}")
            measured = result[executor]
            print(f"{rows:>9,} rows {executor:<15} {measured['seconds']:>7.1f} s "
                  f"peak {measured['peak_rss_mib']:>7.0f} MiB (process before the executor: "
                  f"{measured['rss_before_mib']:.0f} MiB)", flush=True)
        if "tfx-csv" in result:
            result["speedup"] = round(result["tfx-csv"]["seconds"] / result["arrow"]["seconds"], 1)
            result["same_records"] = same_records(args.out / f"arrow-{rows}",
                                                  args.out / f"tfx-csv-{rows}")
            print(f"{rows:>9,} rows: ArrowExampleGen {result['speedup']}x faster; same records "
                  f"in the same splits: {result['same_records']}", flush=True)
        results.append(result)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
