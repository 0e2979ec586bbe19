#!/usr/bin/env python
"""Run the pipeline on this machine: LocalDagRunner, Beam DirectRunner, MLMD on SQLite.

With no arguments it trains on the bundled Chicago Taxi sample (materialized from the
installed tfx package if needed) and pushes a blessed model to outputs/serving/. Every
setting is also a TAXI_<NAME> environment variable; flags win over the environment.

With --watch DIR it keeps training as new spans arrive: DIR holds `span-N/` directories
(ExampleGen's `span-{SPAN}/*` pattern); every poll it runs the pipeline once for each span
that has no finished run in ML Metadata yet, oldest first. A span is trained on once; a
run that crashed half-way is re-run on restart and its finished components come from
MLMD's cache. A span stopped by data validation or drift is not retried: fix the data or
the schema, then run it by hand with --span N.

The terminal shows one line per component (ran or cached, seconds, its key figure) and a
summary; every library's logs and warnings go to PIPELINE_ROOT/logs/<time>.log, whose path
the run prints. --verbose (or TAXI_LOG_LEVEL=INFO) shows them as they come.

Exit status: 0 the run finished (whether or not the model was blessed), 2 data
validation stopped it or the input cannot be read (one line names the file), 1 another
failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import time
from pathlib import Path

import pipeline  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from console.run_console import RunConsole
from data import bundled
from pipeline import configs
from reporting import run_summary, runs
from settings import quiet

log = logging.getLogger("local_runner")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="local_runner.py", description=__doc__, usage="%(prog)s [options]",
        epilog="Settings only a compiled Vertex or Kubeflow job reads (machines, replicas,\n"
               "Spot, the endpoint) are listed by `vertex_runner.py --help`.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, choices=sorted(configs.PROFILES),
                        help="settings profile (default: local)")
    quiet.add_arguments(parser)
    watch = parser.add_argument_group("continuous training")
    watch.add_argument("--watch", metavar="DIR", type=Path,
                       help="train on each new span-N/ directory of DIR as it arrives")
    watch.add_argument("--poll-seconds", type=float, default=60.0,
                       help="--watch: seconds between looks at DIR (default 60)")
    watch.add_argument("--settle-seconds", type=float, default=10.0,
                       help="--watch: a span is ready once its files are this old, so a span "
                            "still being copied in is not read half-written (default 10)")
    watch.add_argument("--once", action="store_true",
                       help="--watch: process the spans that are ready, then exit (for cron)")
    configs.add_arguments(parser, cloud=False)
    return parser.parse_args(argv)


def ensure_data(config: configs.PipelineConfig) -> None:
    root = Path(config.data_root)
    if config.data_root.startswith("gs://") or config.bigquery_query:
        return
    if root.resolve() == bundled.RAW_DIR.resolve():
        bundled.materialize()
    pattern = configs.input_glob(config)
    if not root.is_dir() or not any(p.is_file() for p in root.glob(pattern)):
        raise bundled.DataError(
            f"no files match {pattern!r} in {root}; point --data-root at a directory of CSV "
            "files with a header row, or --input-pattern 'span-{SPAN}/*' at its spans "
            "(omit both for the bundled sample).")


def _in_chain(error: BaseException | None, name: str) -> BaseException | None:
    """The exception of type `name` wherever it sits in the exception chain (the
    AnomalyGate's DataValidationError, ExampleGen's InputError)."""
    while error is not None:
        if type(error).__name__ == name:
            return error
        error = error.__cause__ or error.__context__
    return None


def _input_error(error: BaseException) -> str | None:
    """ExampleGen's one line about a file it cannot read; Beam re-raises a worker's error
    with the original type and its message augmented with the step, which is cut off."""
    found = _in_chain(error, "InputError")
    if found is None:
        return None
    return str(found).split(" [while running")[0].strip().splitlines()[0]


def run(config: configs.PipelineConfig) -> runs.RunSummary:
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipeline import local_beam
    from pipeline.pipeline import create_pipeline

    ensure_data(config)
    local_beam.install()  # the components run in this process
    Path(config.metadata_path).parent.mkdir(parents=True, exist_ok=True)
    log.info("pipeline root %s, metadata %s, serving dir %s",
             config.pipeline_root, config.metadata_path, config.serving_dir)
    log.info("Beam direct runner: %s (%s)", *config.running_mode())
    try:
        LocalDagRunner().run(create_pipeline(config))
    finally:  # a stopped run gets its report too: it shows what stopped it
        summary = write_report(config)
    # Without a summary, summarizing again raises the reason.
    return summary or runs.summarize(config.metadata_path, config.pipeline_name)


def write_report(config: configs.PipelineConfig) -> runs.RunSummary | None:
    """The newest run's summary, with its HTML report written; None if MLMD cannot say."""
    from reporting import report

    try:
        summary = runs.summarize(config.metadata_path, config.pipeline_name)
    except Exception as e:  # noqa: BLE001 - must not mask the run's own exception
        log.warning("could not summarize the run: %s", e)
        return None
    try:
        summary.report_path = str(report.write(summary, config.pipeline_root,
                                               config.control_dir))
        log.info("run report: %s", summary.report_path)
    except Exception as e:  # noqa: BLE001 - the run's outcome stands without its report
        log.warning("could not write the run report: %s", e)
    return summary


SPAN_DIR = re.compile(r"^span-(\d+)$")


def ready_spans(directory: Path, settle_seconds: float, now: float | None = None) -> list[int]:
    """Span numbers of span-N/ directories holding files none of which is still being written."""
    now = time.time() if now is None else now
    spans = []
    for child in directory.iterdir() if directory.is_dir() else []:
        match = SPAN_DIR.match(child.name)
        files = [f for f in child.rglob("*") if f.is_file()] if match else []
        if not files or any(f.suffix == ".tmp" for f in files):
            continue
        if now - max(f.stat().st_mtime for f in files) >= settle_seconds:
            spans.append(int(match.group(1)))
    return sorted(spans)


def watch(config: configs.PipelineConfig, poll_seconds: float, settle_seconds: float,
          once: bool, level: int | None = None) -> int:
    """Runs the pipeline for every ready span without a finished run, oldest first."""
    log.info("watching %s for new spans (every %.0f s)", config.data_root, poll_seconds)
    worst = 0
    while True:
        finished = {}
        if Path(config.metadata_path).exists():
            finished = runs.finished_spans(config.metadata_path, config.pipeline_name)
        todo = [s for s in ready_spans(Path(config.data_root), settle_seconds)
                if s not in finished]
        for span in todo:
            print(f"\n== span {span}: training run", flush=True)
            status = run_and_print(dataclasses.replace(config, span=span), level)
            worst = max(worst, status)
        if once:
            return worst
        if not todo:
            log.debug("no new span; finished so far: %s", finished)
        time.sleep(poll_seconds)


def run_and_print(config: configs.PipelineConfig, level: int | None = None) -> int:
    """One run with its console and summary; the exit status main() documents. Logs go to a
    file under the pipeline root unless `level` shows them on the terminal."""
    start = time.monotonic()
    log_path = Path(config.pipeline_root) / "logs" / f"{quiet.file_stamp()}.log"
    source = "a BigQuery query" if config.bigquery_query else config.data_root
    print(f"{config.pipeline_name} on {source}; logs: {log_path}", flush=True)
    try:
        with quiet.routed(log_path, level) as out, \
                RunConsole(out, config.metadata_path, config.pipeline_name):
            try:
                summary = run(config)
            except Exception:
                log.exception("the run failed")  # the traceback, into the log file
                raise
    except bundled.DataError as e:  # no input to read: exit 2, as for an unreadable file
        print(f"local_runner: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - report the cause in one readable message
        unreadable = _input_error(e)
        if unreadable is not None:
            print(f"\nlocal_runner: run stopped: the input cannot be read: {unreadable}",
                  file=sys.stderr)
            return 2
        cause = _in_chain(e, "DataValidationError")
        if cause is None:
            print(f"\nlocal_runner: the run failed: {quiet.one_line(e)}\n"
                  f"The traceback and every log line are in {log_path}", file=sys.stderr)
            return 1
        print(f"\nlocal_runner: run stopped by data validation.\n{cause}", file=sys.stderr)
        from reporting import report

        latest = runs.summarize(config.metadata_path, config.pipeline_name)
        print(f"Report: {report.report_path(config.pipeline_root, latest.run_id)}",
              file=sys.stderr)
        return 2
    print()
    print(run_summary.format_summary(summary, components=False))
    print(f"Wall time: {time.monotonic() - start:.1f} s; MLMD: {config.metadata_path}")
    print(f"Log: {log_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        level = quiet.terminal_level(args.log_level, args.verbose)
    except ValueError as e:
        print(f"local_runner: {e}", file=sys.stderr)
        return 1
    logging.basicConfig(level=level or logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.watch is not None:  # the watched directory is the data, laid out in spans
        args.data_root = str(args.watch)
        args.input_pattern = args.input_pattern or "span-{SPAN}/*"
    try:
        config = configs.from_args(args)
    except configs.ConfigError as e:
        print(f"local_runner: configuration error: {e}", file=sys.stderr)
        return 1
    if args.watch is None:
        return run_and_print(config, level)
    try:
        return watch(config, args.poll_seconds, args.settle_seconds, args.once, level)
    except KeyboardInterrupt:
        print("local_runner: stopped watching", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
