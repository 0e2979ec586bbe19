#!/usr/bin/env python
"""Compile the pipeline for Vertex AI Pipelines; submit it, schedule it, or run it offline.

It builds the same create_pipeline(config) DAG the local runner runs, with the `vertex`
profile: Dataflow for the data-heavy components, Vertex Training for Trainer and Tuner,
a Vertex endpoint (or a gs:// serving dir) for the Pusher, Vertex ML Metadata.

    vertex_runner.py --gcp-project P --gcp-region us-central1 --image IMAGE \\
        --output-root gs://BUCKET/taxi --data-root gs://BUCKET/data [--submit | --schedule CRON]
    vertex_runner.py --offline          # the compiled job, run here before you pay for it
    vertex_runner.py --kfp-host https://KFP --image IMAGE --output-root gs://BUCKET/taxi \\
        --data-root gs://BUCKET/data      # the same DAG on open-source Kubeflow Pipelines

--offline runs the exact compiled PipelineJob on this machine through TFX's own container
entrypoint and executors (gs:// -> a local folder, Dataflow -> DirectRunner, CustomJobs ->
local processes, endpoint -> a local registry); Vertex settings you do not give get
placeholder values. Every setting is also a TAXI_<NAME> environment variable. Compiling
needs no GCP access; --submit and --schedule use your application-default credentials.

--target kubeflow (implied by --kfp-host) compiles the same DAG with the `kubeflow` profile:
the Trainer and Tuner in their task's pod, the Pusher writing to SERVING_DIR, the served
model as the Evaluator's baseline (Kubeflow's backend runs no resolver), one span per run
(no {SPAN} layouts: KFP runs no ExampleGen driver). --offline runs either target.
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: TensorFlow's import-time C++ lines go to its log
    from settings import quiet as _quiet

    _quiet.hold_native_stderr()

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

import pipeline  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from pipeline import configs
from pipeline.orchestration import vertex
from settings import quiet

log = logging.getLogger("vertex_runner")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vertex_runner.py", description=__doc__,
                                     usage="%(prog)s [options]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=None,
                        help="pipeline JSON to write (default outputs/vertex/NAME.json)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--submit", action="store_true", help="submit one run after compiling")
    action.add_argument("--schedule", metavar="CRON",
                        help="create a recurring schedule, e.g. '0 3 * * *' (continuous training)")
    action.add_argument("--offline", action="store_true",
                        help="run the compiled job on this machine through TFX's Vertex "
                             "container entrypoint; nothing is sent to Google Cloud")
    parser.add_argument("--offline-parallelism", type=int, default=None, metavar="N",
                        help="with --offline: tasks run side by side as their inputs are ready, "
                             "as on Vertex, at most N at a time (default: the cores, up to 4)")
    parser.add_argument("--offline-root", type=Path, default=Path("outputs/vertex_offline"),
                        help="with --offline: stands for gs:// and keeps the state later "
                             "offline runs resolve from (default outputs/vertex_offline)")
    parser.add_argument("--offline-data", type=Path, default=None,
                        help="with --offline: the local folder whose files DATA_ROOT holds "
                             "(default: the bundled sample, materialized if needed)")
    parser.add_argument("--offline-preempt", default="", metavar="REPLICA",
                        help="with --offline: kill this replica of the Trainer's CustomJob "
                             "(e.g. workerpool1-0) once, after its first backup, as a "
                             "reclaimed Spot VM dies; the job restarts it as Vertex would")
    parser.add_argument("--target", choices=("vertex", "kubeflow"), default=None,
                        help="what to compile for: Vertex AI Pipelines (default) or open-source "
                             "Kubeflow Pipelines on any cluster")
    action.add_argument("--kfp-host", metavar="URL",
                        help="submit one run to this Kubeflow Pipelines endpoint (implies "
                             "--target kubeflow), e.g. http://localhost:8080 after "
                             "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`")
    parser.add_argument("--kfp-namespace", default=None,
                        help="with --kfp-host: the user namespace of a multi-user cluster")
    parser.add_argument("--kfp-experiment", default=None,
                        help="with --kfp-host: the experiment to file the run under "
                             "(default: the pipeline name)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="label for the run or schedule (repeatable)")
    parser.add_argument("--no-job-cache", dest="job_cache", action="store_false",
                        help="submit with Vertex's step caching off (default: on)")
    quiet.add_arguments(parser)
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


def run_offline(args: argparse.Namespace, config: configs.PipelineConfig, job: Path,
                out: TextIO, err: TextIO) -> int:
    from pipeline.orchestration import vertex_boundary, vertex_offline

    if args.offline_preempt:  # read by the CustomJob boundary inside the Trainer's task
        os.environ[vertex_boundary.PREEMPT_ENV] = args.offline_preempt
    data = args.offline_data
    if data is None:
        from data import bundled

        data = bundled.materialize().parent
    try:
        run = vertex_offline.OfflineRun(job, args.offline_root, target=config.profile,
                                        echo=lambda line: print(line, file=out, flush=True),
                                        caching=args.job_cache,
                                        **({"parallelism": args.offline_parallelism}
                                           if args.offline_parallelism is not None else {}))
        if not config.bigquery_query:  # a query's rows come from the BigQuery boundary
            vertex_offline.link_data(data, vertex_offline.local_path(config.data_root,
                                                                     run.gcs))
        ok = run.run()
    except vertex_offline.OfflineRunError as e:
        print(f"vertex_runner: {e}", file=err)
        return 1
    for line in vertex.offline_outcome(run):
        print(line, file=out)
    print(f"offline run {'succeeded' if ok else 'FAILED'}: logs in {run.logs}", file=out)
    return 0 if ok else 1


def main(argv: list[str] | None = None, aiplatform: Any = None, kfp_client: Any = None) -> int:
    args = parse_args(argv)
    try:
        level = quiet.terminal_level(args.log_level, args.verbose)
        if args.kfp_host and args.target == "vertex":
            raise configs.ConfigError("--kfp-host submits to Kubeflow Pipelines: drop "
                                      "--target vertex")
        if args.offline_preempt and not args.offline:
            raise configs.ConfigError("--offline-preempt kills a replica of an offline run: "
                                      "add --offline")
        args.profile = "kubeflow" if args.kfp_host else (args.target or "vertex")
        if args.profile == "kubeflow" and (args.submit or args.schedule):
            raise configs.ConfigError("--submit and --schedule send the job to Vertex AI; "
                                      "to run on Kubeflow Pipelines give --kfp-host URL")
        if args.offline:
            for name, value in vertex.OFFLINE_DEFAULTS.items():
                if getattr(args, name) is None and f"{configs.ENV_PREFIX}{name.upper()}" \
                        not in os.environ:
                    setattr(args, name, value)
        config = configs.from_args(args)
        labels = pairs(args.label, "--label")
    except (configs.ConfigError, ValueError) as e:
        print(f"vertex_runner: {e}", file=sys.stderr)
        return 2
    output = args.output or Path("outputs") / config.profile / f"{config.pipeline_name}.json"
    log_file = output.parent / "logs" / f"vertex_runner-{quiet.file_stamp()}.log"
    err = sys.stderr
    try:
        with quiet.routed(log_file, level, own=("vertex_runner",)) as out:
            return act(args, config, labels, output, out, err, log_file, aiplatform,
                       kfp_client)
    except Exception as e:  # noqa: BLE001 - one line here, the traceback in the log
        with open(log_file, "a", encoding="utf-8") as f:
            traceback.print_exc(file=f)
        print(f"vertex_runner: {quiet.one_line(e)} (traceback in {log_file})", file=err)
        return 1


def act(args: argparse.Namespace, config: configs.PipelineConfig, labels: dict[str, str],
        output: Path, out: TextIO, err: TextIO, log_file: Path, aiplatform: Any,
        kfp_client: Any) -> int:
    """Compile to `output`, then run offline, submit or schedule: what the command says goes
    to `out` and `err`; everything libraries say goes to `log_file`."""
    path = vertex.compile_pipeline(config, output)
    where = "Kubeflow Pipelines" if config.profile == "kubeflow" else "Vertex AI Pipelines"
    print(f"compiled {config.pipeline_name} for {where}: {path}", file=out)
    print(f"library logs: {log_file}", file=out)
    if args.offline:
        return run_offline(args, config, path, out, err)
    if args.kfp_host:
        from pipeline.orchestration import kubeflow

        try:
            result = kubeflow.submit(path, config, host=args.kfp_host,
                                     namespace=args.kfp_namespace,
                                     experiment=args.kfp_experiment or config.pipeline_name,
                                     enable_caching=args.job_cache, client_factory=kfp_client)
        except kubeflow.KubeflowError as e:
            print(f"vertex_runner: {e}", file=err)
            return 1
        print(f"submitted run {getattr(result, 'run_id', result)} to {args.kfp_host}",
              file=out)
        return 0
    if args.submit or args.schedule:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        try:
            result = vertex.submit(path, config, labels=labels, enable_caching=args.job_cache,
                                   schedule=args.schedule, aiplatform=aiplatform)
        except auth_exceptions.DefaultCredentialsError:
            print(f"vertex_runner: {vertex.CREDENTIALS_HELP}; the compiled job is {path}",
                  file=err)
            return 2
        except api_exceptions.GoogleAPIError as e:
            print(f"vertex_runner: Vertex AI refused the job: {e}", file=err)
            return 1
        what = f"schedule '{args.schedule}'" if args.schedule else "run"
        print(f"submitted {what}: {getattr(result, 'resource_name', result)}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
