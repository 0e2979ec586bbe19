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

    def __init__(self, every: float = 0.25, limit_gib: float = 0.0):
        super().__init__(daemon=True)
        import psutil

        self.process, self.every, self.samples = psutil.Process(), every, []
        self.running = True
        self.limit = limit_gib * 2**30  # 0: none

    def over_limit(self, rss: int) -> None:
        """Stops the run (its workers too) before the machine runs out of memory, saying so."""
        import os

        print(f"SCALE-OVER-LIMIT {rss / 2**30:.2f}", flush=True)
        sys.stderr.write(f"\nscale: RSS {rss / 2**30:.2f} GiB passed the limit of "
                         f"{self.limit / 2**30:.1f} GiB: run stopped\n")
        for child in self.process.children(recursive=True):
            with contextlib.suppress(Exception):
                child.kill()
        os._exit(3)

    def run(self) -> None:
        import psutil

        while self.running:
            rss = 0
            for p in [self.process, *self.process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    rss += p.memory_info().rss
            self.samples.append((time.time() * 1000, rss))
            if self.limit and rss > self.limit:
                self.over_limit(rss)
            time.sleep(self.every)

    def peak_mib(self, start_ms: float, end_ms: float) -> float:
        window = [rss for t, rss in self.samples if start_ms <= t <= end_ms + self.every * 1000]
        return round(max(window, default=0) / 2**20, 1)


def one_size(data_root: str, out: Path, settings: dict[str, str],
             limit_gib: float = 0.0) -> dict:
    """Runs the pipeline once on `data_root` in this process; per-component figures."""
    import local_runner
    from pipeline import configs
    from reporting import runs

    config = configs.load(env={}, data_root=data_root, output_root=str(out),
                          **{"safe_to_serve": False, **settings})
    sampler = RssSampler(limit_gib=limit_gib)
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


def run_size(rows: int, out: Path, settings: list[str], limit_gib: float) -> dict:
    """One size in a fresh process; its log goes to out/run-ROWS.log as it runs (tail it)."""
    from data import simulator

    started = time.monotonic()
    data = simulator.write_span(out / f"data-{rows}", 1, rows, seed=rows % 997)
    drawn = round(time.monotonic() - started, 1)
    shutil.rmtree(out / f"run-{rows}", ignore_errors=True)  # no cache, no baseline
    log_path = out / f"run-{rows}.log"
    started = time.monotonic()
    with log_path.open("w") as log_file:
        proc = subprocess.run([sys.executable, __file__, "--one", str(data.parent),
                               "--out", str(out / f"run-{rows}"),
                               f"--max-rss-gib={limit_gib}",
                               *[f"--set={s}" for s in settings]],
                              stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SCALE-")]
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0 or not lines or not lines[-1].startswith("SCALE-RESULT "):
        tail = log_path.read_text()[-3000:]
        over = [ln for ln in lines if ln.startswith("SCALE-OVER-LIMIT ")]
        why = (f"RSS passed {limit_gib} GiB ({over[-1].split()[1]} GiB)" if over
               else f"exit {proc.returncode}")
        print(f"  the run on {rows:,} rows failed: {why}; its log: {log_path}\n{tail}",
              file=sys.stderr)
        return {"rows": rows, "failed": why, "process_seconds": seconds, "log": str(log_path)}
    result = json.loads(lines[-1].removeprefix("SCALE-RESULT "))
    return {"rows": rows, **result, "process_seconds": seconds, "drawing_seconds": drawn,
            "log": str(log_path)}


def summarise(results: list[dict], settings: list[str]) -> dict:
    """The figures, and each size's time and peak against the size before it."""
    ran = [r for r in results if "failed" not in r]
    ratios = []
    for a, b in zip(ran, ran[1:], strict=False):
        ratios.append(f"{b['rows']:,} / {a['rows']:,} rows ({b['rows'] / a['rows']:.0f}x): "
                      f"time {b['wall_seconds'] / a['wall_seconds']:.2f}x, peak RSS "
                      f"{b['peak_rss_mib'] / a['peak_rss_mib']:.2f}x "
                      f"({a['peak_rss_mib'] / 1024:.2f} -> {b['peak_rss_mib'] / 1024:.2f} GiB)")
    return {"settings": settings, "results": results, "ratios": ratios,
            "growth_exponent_wall": growth(ran, lambda r: r["wall_seconds"]) if ran else None,
            "growth_exponent_rss": growth(ran, lambda r: r["peak_rss_mib"]) if ran else None}


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
    parser.add_argument("--max-rss-gib", type=float, default=16.0,
                        help="stop a run whose RSS (workers included) passes this, before the "
                             "machine runs out of memory; 0: no limit (default 16)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run, this process
    args = parser.parse_args(argv)
    bad = [s for s in args.set if "=" not in s]
    if bad:
        parser.error(f"--set takes SETTING=VALUE, got {bad}")
    if args.one:
        settings = dict(s.split("=", 1) for s in args.set)
        print("SCALE-RESULT " + json.dumps(one_size(args.one, args.out, settings,
                                                    args.max_rss_gib)), flush=True)
        return 0

    sizes = sorted(int(n) for n in args.rows.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for rows in sizes:
        print(f"{rows:,} rows ... (log: {args.out / f'run-{rows}.log'})", flush=True)
        results.append(run_size(rows, args.out, args.set, args.max_rss_gib))
        r = results[-1]
        if "failed" not in r:
            print(f"  {r['wall_seconds']:.0f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB, AUC "
                  f"{r['auc']:.4f}", flush=True)
            for name, c in r["components"].items():
                if c["seconds"] >= 0.5:
                    print(f"    {name:28} {c['seconds']:>8.1f} s "
                          f"{c['peak_rss_mib']:>8,.0f} MiB")
        summary = summarise(results, args.set)
        (args.out / "scale.json").write_text(json.dumps(summary, indent=2))  # after each size
    ran = [r for r in results if "failed" not in r]
    if len(ran) >= 2:
        plot(ran, args.out / "scale.png")
    for line in summary["ratios"]:
        print(line)
    print(f"growth exponent (1 = linear): time {summary['growth_exponent_wall']}, "
          f"peak RSS {summary['growth_exponent_rss']}")
    print(f"written: {args.out / 'scale.json'}, {args.out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
