#!/usr/bin/env python
"""Compile the pipeline for Vertex AI Pipelines and, optionally, submit or schedule it.

It builds the same create_pipeline(config) DAG the local runner runs, with the `vertex`
profile: Dataflow for the data-heavy components, Vertex Training for Trainer and Tuner,
a Vertex endpoint (or a gs:// serving dir) for the Pusher, Vertex ML Metadata.

    vertex_runner.py --gcp-project P --gcp-region us-central1 --image IMAGE \\
        --output-root gs://BUCKET/taxi --data-root gs://BUCKET/data [--submit | --schedule CRON]

Every setting is also a TAXI_<NAME> environment variable. Compiling needs no GCP access;
--submit and --schedule use your application-default credentials.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from pipeline import configs

log = logging.getLogger("vertex_runner")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vertex_runner.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=None,
                        help="pipeline JSON to write (default outputs/vertex/NAME.json)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--submit", action="store_true", help="submit one run after compiling")
    action.add_argument("--schedule", metavar="CRON",
                        help="create a recurring schedule, e.g. '0 3 * * *' (continuous training)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="label for the run or schedule (repeatable)")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="runtime parameter value for the job (repeatable)")
    parser.add_argument("--no-job-cache", dest="job_cache", action="store_false",
                        help="submit with Vertex's step caching off (default: on)")
    parser.add_argument("--log-level", default="INFO")
    configs.add_arguments(parser)
    return parser.parse_args(argv)


def pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise configs.ConfigError(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def compile_pipeline(config: configs.PipelineConfig, output: Path) -> Path:
    """Writes the Vertex PipelineJob JSON for the single DAG and returns its path."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kfv2

    from pipeline.pipeline import create_pipeline

    output.parent.mkdir(parents=True, exist_ok=True)
    runner = kfv2.KubeflowV2DagRunner(
        config=kfv2.KubeflowV2DagRunnerConfig(default_image=config.image),
        output_dir=str(output.parent), output_filename=output.name)
    if output.exists():
        output.unlink()  # the runner refuses to overwrite
    runner.run(create_pipeline(config))
    return output


def submit(template: Path, config: configs.PipelineConfig, *, labels: dict[str, str],
           parameters: dict[str, Any], enable_caching: bool, schedule: str | None,
           aiplatform: Any = None) -> Any:
    """Creates the PipelineJob and submits it, or schedules it. `aiplatform` is injectable."""
    if aiplatform is None:
        from google.cloud import aiplatform
    aiplatform.init(project=config.gcp_project, location=config.gcp_region)
    job = aiplatform.PipelineJob(
        display_name=config.pipeline_name,
        template_path=str(template),
        pipeline_root=config.pipeline_root,
        parameter_values=parameters,
        enable_caching=enable_caching,
        labels=labels,
        project=config.gcp_project,
        location=config.gcp_region,
    )
    account = config.service_account or None
    if schedule:
        return job.create_schedule(display_name=f"{config.pipeline_name}-schedule", cron=schedule,
                                   max_concurrent_run_count=1, service_account=account)
    job.submit(service_account=account)
    return job


def main(argv: list[str] | None = None, aiplatform: Any = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.profile = "vertex"
        config = configs.from_args(args)
        labels = pairs(args.label, "--label")
        parameters = pairs(args.parameter, "--parameter")
    except configs.ConfigError as e:
        print(f"vertex_runner: {e}", file=sys.stderr)
        return 2
    output = args.output or Path("outputs") / "vertex" / f"{config.pipeline_name}.json"
    path = compile_pipeline(config, output)
    print(f"compiled {config.pipeline_name} for Vertex AI Pipelines: {path}")
    if args.submit or args.schedule:
        result = submit(path, config, labels=labels, parameters=parameters,
                        enable_caching=args.job_cache, schedule=args.schedule,
                        aiplatform=aiplatform)
        what = f"schedule '{args.schedule}'" if args.schedule else "run"
        print(f"submitted {what}: {getattr(result, 'resource_name', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
