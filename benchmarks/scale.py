#!/usr/bin/env python
"""Scale: the local pipeline on simulated data of growing size, time and memory per component.

For each size, `data.simulator` draws that many rows from the bundled distribution, and the
default local run (ExampleGen -> StatisticsGen -> Transform -> Trainer -> Evaluator -> ...,
the serving check off) runs on them in a fresh process while a thread samples its RSS.
Per component: seconds (from MLMD) and the peak RSS sampled while it ran. Printed, written
as JSON, and plotted (PNG) against rows, with the growth exponent from the smallest to the
largest size (1 = linear).

    python benchmarks/scale.py [--rows 100000,1000000] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)


class RssSampler(threading.Thread):
    """RSS of this process and its children (Beam's multi_processing workers) every `every`
    seconds, with wall-clock times (ms since epoch)."""

    def __init__(self, every: float = 0.25):
        super().__init__(daemon=True)
        import psutil

        self.process, self.every, self.samples = psutil.Process(), every, []
        self.running = True

    def run(self) -> None:
        import psutil

        while self.running:
            rss = 0
            for p in [self.process, *self.process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    rss += p.memory_info().rss
            self.samples.append((time.time() * 1000, rss))
            time.sleep(self.every)

    def peak_mib(self, start_ms: float, end_ms: float) -> float:
        window = [rss for t, rss in self.samples if start_ms <= t <= end_ms + self.every * 1000]
        return round(max(window, default=0) / 2**20, 1)


def one_size(data_root: str, out: Path, settings: dict[str, str]) -> dict:
    """Runs the pipeline once on `data_root` in this process; per-component figures."""
    import local_runner
    from pipeline import configs
    from reporting import runs

    config = configs.load(env={}, data_root=data_root, output_root=str(out),
                          **{"safe_to_serve": False, **settings})
    sampler = RssSampler()
    sampler.start()
    started = time.monotonic()
    summary = local_runner.run(config)
    wall = time.monotonic() - started
    sampler.running = False
    store = runs.connect(config.metadata_path)
    executions = {e.id: e for e in store.get_executions_by_id(
        [c.execution_id for c in summary.components])}
    components = {}
    for c in summary.components:
        e = executions[c.execution_id]
        components[c.node_id] = {
            "seconds": round(c.seconds, 1),
            "peak_rss_mib": sampler.peak_mib(e.create_time_since_epoch,
                                             e.last_update_time_since_epoch)}
    return {"wall_seconds": round(wall, 1), "components": components,
            "peak_rss_mib": round(max(rss for _, rss in sampler.samples) / 2**20, 1),
            "auc": summary.metrics.get("auc"), "blessed": summary.blessed}


def run_size(rows: int, out: Path, settings: list[str]) -> dict:
    from data import simulator

    data = simulator.write_span(out / f"data-{rows}", 1, rows, seed=rows % 997)
    shutil.rmtree(out / f"run-{rows}", ignore_errors=True)  # no cache, no baseline
    started = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--one", str(data.parent),
                           "--out", str(out / f"run-{rows}"),
                           *[f"--set={s}" for s in settings]],
                          capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SCALE-RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"the run on {rows:,} rows failed (exit {proc.returncode})")
    result = json.loads(lines[-1].removeprefix("SCALE-RESULT "))
    result["process_seconds"] = round(time.monotonic() - started, 1)
    return {"rows": rows, **result}


def growth(results: list[dict], key) -> float | None:
    """Exponent k in cost ~ rows^k between the smallest and the largest size."""
    first, last = results[0], results[-1]
    a, b = key(first), key(last)
    if len(results) < 2 or not a or not b:
        return None
    return round(math.log(b / a) / math.log(last["rows"] / first["rows"]), 2)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r["rows"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(rows, [r["wall_seconds"] for r in results], "k-o", label="total")
    for name in results[-1]["components"]:
        seconds = [r["components"].get(name, {}).get("seconds", 0) for r in results]
        if max(seconds) >= 1:
            left.plot(rows, seconds, "-o", label=name, alpha=0.8)
    left.plot(rows, [results[0]["wall_seconds"] * n / rows[0] for n in rows], "k:",
              label="linear from the smallest")
    right.plot(rows, [r["peak_rss_mib"] / 1024 for r in results], "k-o", label="peak RSS")
    for ax, label in ((left, "seconds"), (right, "GiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Local pipeline cost against rows (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "scale")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="a pipeline setting for every run, e.g. "
                             "--set beam_direct_running_mode=multi_processing (repeatable)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run, this process
    args = parser.parse_args(argv)
    bad = [s for s in args.set if "=" not in s]
    if bad:
        parser.error(f"--set takes SETTING=VALUE, got {bad}")
    if args.one:
        settings = dict(s.split("=", 1) for s in args.set)
        print("SCALE-RESULT " + json.dumps(one_size(args.one, args.out, settings)), flush=True)
        return 0

    sizes = sorted(int(n) for n in args.rows.split(","))
    results = []
    for rows in sizes:
        print(f"{rows:,} rows ...", flush=True)
        results.append(run_size(rows, args.out, args.set))
        r = results[-1]
        print(f"  {r['wall_seconds']:.0f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB, AUC "
              f"{r['auc']:.4f}", flush=True)
        for name, c in r["components"].items():
            if c["seconds"] >= 0.5:
                print(f"    {name:28} {c['seconds']:>8.1f} s {c['peak_rss_mib']:>8,.0f} MiB")
    summary = {"settings": args.set, "results": results,
               "growth_exponent_wall": growth(results, lambda r: r["wall_seconds"]),
               "growth_exponent_rss": growth(results, lambda r: r["peak_rss_mib"])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(summary, indent=2))
    plot(results, args.out / "scale.png")
    print(f"growth exponent (1 = linear): time {summary['growth_exponent_wall']}, "
          f"peak RSS {summary['growth_exponent_rss']}")
    print(f"written: {args.out / 'scale.json'}, {args.out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
