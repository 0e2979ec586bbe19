#!/usr/bin/env python
"""Run the pipeline on this machine: LocalDagRunner, Beam DirectRunner, MLMD on SQLite.

With no arguments it trains on the bundled Chicago Taxi sample (materialized from the
installed tfx package if needed) and pushes a blessed model to outputs/serving/. Every
setting is also a TAXI_<NAME> environment variable; flags win over the environment.

Exit status: 0 the run finished (whether or not the model was blessed), 2 data
validation stopped it, 1 another failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pipeline  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from data import bundled
from pipeline import configs, run_summary

log = logging.getLogger("local_runner")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="local_runner.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, choices=sorted(configs.PROFILES),
                        help="settings profile (default: local)")
    parser.add_argument("--log-level", default="INFO", help="Python log level (default: INFO)")
    configs.add_arguments(parser)
    return parser.parse_args(argv)


def ensure_data(config: configs.PipelineConfig) -> None:
    root = Path(config.data_root)
    if config.data_root.startswith("gs://"):
        return
    if root.resolve() == bundled.RAW_DIR.resolve():
        bundled.materialize()
    if not root.is_dir() or not any(root.glob("*.csv")):
        raise bundled.DataError(f"no CSV files in {root}; point --data-root at a directory of "
                                "CSV files with a header row (or omit it for the bundled sample).")


def _validation_error(error: BaseException | None) -> BaseException | None:
    """The AnomalyGate's DataValidationError, wherever it sits in the exception chain."""
    while error is not None:
        if type(error).__name__ == "DataValidationError":
            return error
        error = error.__cause__ or error.__context__
    return None


def run(config: configs.PipelineConfig) -> run_summary.RunSummary:
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipeline.pipeline import create_pipeline

    ensure_data(config)
    Path(config.metadata_path).parent.mkdir(parents=True, exist_ok=True)
    log.info("pipeline root %s, metadata %s, serving dir %s",
             config.pipeline_root, config.metadata_path, config.serving_dir)
    try:
        LocalDagRunner().run(create_pipeline(config))
    finally:  # a stopped run gets its report too: it shows what stopped it
        summary = write_report(config)
    # Without a summary, summarizing again raises the reason.
    return summary or run_summary.summarize(config.metadata_path, config.pipeline_name)


def write_report(config: configs.PipelineConfig) -> run_summary.RunSummary | None:
    """The newest run's summary, with its HTML report written; None if MLMD cannot say."""
    from pipeline import report

    try:
        summary = run_summary.summarize(config.metadata_path, config.pipeline_name)
    except Exception as e:  # noqa: BLE001 - must not mask the run's own exception
        log.warning("could not summarize the run: %s", e)
        return None
    try:
        summary.report_path = str(report.write(summary, config.pipeline_root))
        log.info("run report: %s", summary.report_path)
    except Exception as e:  # noqa: BLE001 - the run's outcome stands without its report
        log.warning("could not write the run report: %s", e)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "tensorflow", "apache_beam"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config = configs.from_args(args)
    except configs.ConfigError as e:
        print(f"local_runner: configuration error: {e}", file=sys.stderr)
        return 1
    start = time.monotonic()
    try:
        summary = run(config)
    except bundled.DataError as e:
        print(f"local_runner: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - report the cause in one readable message
        cause = _validation_error(e)
        if cause is None:
            raise
        print(f"\nlocal_runner: run stopped by data validation.\n{cause}", file=sys.stderr)
        from pipeline import report

        latest = run_summary.summarize(config.metadata_path, config.pipeline_name)
        print(f"Report: {report.report_path(config.pipeline_root, latest.run_id)}",
              file=sys.stderr)
        return 2
    print()
    print(run_summary.format_summary(summary))
    print(f"Wall time: {time.monotonic() - start:.1f} s; MLMD: {config.metadata_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
