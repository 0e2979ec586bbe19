"""Compile the pipeline for Vertex AI Pipelines, submit or schedule it, or run it offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import configs

# What an offline run uses for the Vertex settings a person has not given: the spec is
# compiled exactly as for a real project, only with these names in it.
OFFLINE_DEFAULTS = {
    "gcp_project": "offline-project",
    "gcp_region": "us-central1",
    "image": "offline.local/taxi/pipeline:checkout",
    "output_root": "gs://offline-bucket/taxi",
    "data_root": "gs://offline-bucket/data",
}
CREDENTIALS_HELP = ("no Google Cloud credentials found: run `gcloud auth application-default "
                    "login` (or set GOOGLE_APPLICATION_CREDENTIALS to a service account key)")


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
    _never_cache(output, READ_AT_RUN_TIME + (("Pusher",) if config.require_approval else ()))
    return output


# Tasks that read the control folder's contamination marks when they run: a new mark (or a
# removal) on unchanged data must reach them, and through their outputs every task after.
READ_AT_RUN_TIME = ("SpanExamples", "SpanWindow")


def _never_cache(job_path: Path, tasks: tuple[str, ...]) -> None:
    """Tasks that must run again on a rerun of the same job: those that read the marks when
    they run, and the Pusher under --require-approval, which reads the approvals (a cached
    refusal would never push the model someone has since approved)."""
    job = json.loads(job_path.read_text())
    compiled = job["pipelineSpec"]["root"]["dag"]["tasks"]
    for task in tasks:
        if task in compiled:
            compiled[task]["cachingOptions"] = {"enableCache": False}
    job_path.write_text(json.dumps(job, indent=2, sort_keys=True))


def submit(template: Path, config: configs.PipelineConfig, *, labels: dict[str, str],
           enable_caching: bool, schedule: str | None, aiplatform: Any = None) -> Any:
    """Creates the PipelineJob and submits it, or schedules it. `aiplatform` is injectable."""
    if aiplatform is None:
        from google.cloud import aiplatform
    aiplatform.init(project=config.gcp_project, location=config.gcp_region)
    job = aiplatform.PipelineJob(
        display_name=config.pipeline_name,
        template_path=str(template),
        pipeline_root=config.pipeline_root,
        # On: each task as compiled (all cached but a Pusher that waits for approval); off: none.
        enable_caching=None if enable_caching else False,
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


def offline_outcome(run: Any) -> list[str]:
    """What a person wants to know at the end of an offline run: blessed, pushed where."""
    from reporting.artifacts import REPORT_FILE

    lines = []
    blessing = run.outputs_of("Evaluator", "blessing")
    if blessing:
        blessed = blessing[0]["metadata"].get("blessed")
        baseline = blessing[0]["metadata"].get("baseline_model_id")
        lines.append(f"blessed: {'yes' if blessed else 'no'}"
                     + (f" (against the baseline {baseline})" if baseline else
                        " (no baseline: first blessed model)"))
    pushed = run.outputs_of("Pusher", "pushed_model")
    if pushed:
        meta = pushed[0]["metadata"]
        lines.append(f"pushed: {meta.get('pushed_destination')}" if meta.get("pushed")
                     else "pushed: no")
    report = run.outputs_of("RunReport", "report")
    if report:
        lines.append(f"report: {report[0]['uri']}/{REPORT_FILE}")
    endpoints = run.root / "endpoints.json"
    if endpoints.exists():
        for endpoint in json.loads(endpoints.read_text()).values():
            lines.append(f"endpoint {endpoint['display_name']}: traffic "
                         f"{endpoint['traffic_split']} over "
                         f"{len(endpoint['deployed_models'])} deployed model(s)")
    return lines
