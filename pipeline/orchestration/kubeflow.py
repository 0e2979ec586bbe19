"""Submit the compiled pipeline to an open-source Kubeflow Pipelines endpoint (any cluster).

The job is compiled exactly as for Vertex (one DAG, TFX's KubeflowV2DagRunner) with the
`kubeflow` profile. KFP's client takes a PipelineSpec as YAML, not Vertex's PipelineJob
JSON, so the spec is written beside the job; and KFP's backend compiles no resolver task
(`resolver not implemented yet`), so a spec that has one is refused here, before the
cluster refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipeline import configs


class KubeflowError(RuntimeError):
    """The spec or the endpoint cannot take the run; the message says why."""


def spec_problems(spec: dict) -> list[str]:
    """What KFP's backend would refuse in a PipelineSpec."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    problems = [f"task executor {name} is a resolver, which Kubeflow Pipelines does not run "
                "(compile with the kubeflow profile)"
                for name, executor in sorted(executors.items()) if "resolver" in executor]
    vertex_only = [name for name, executor in sorted(executors.items())
                   if "google_cloud_ai_platform" in json.dumps(executor)]
    if vertex_only:
        problems.append(f"task executors {', '.join(vertex_only)} call Vertex AI "
                        "(compile with the kubeflow profile)")
    return problems


def write_package(job_file: Path) -> Path:
    """The PipelineSpec of the compiled PipelineJob, as the YAML package KFP's client reads."""
    spec = json.loads(job_file.read_text())["pipelineSpec"]
    problems = spec_problems(spec)
    if problems:
        raise KubeflowError("; ".join(problems))
    package = job_file.with_suffix(".yaml")
    package.write_text(yaml.safe_dump(spec, sort_keys=False))
    return package


def submit(job_file: Path, config: configs.PipelineConfig, *, host: str, namespace: str | None,
           experiment: str, enable_caching: bool, client_factory: Any = None) -> Any:
    """Creates a run on the endpoint; `client_factory(host=, namespace=)` is injectable."""
    package = write_package(job_file)
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    try:
        client = client_factory(host=host, namespace=namespace)
        return client.create_run_from_pipeline_package(
            str(package), arguments={}, run_name=config.pipeline_name,
            experiment_name=experiment, namespace=namespace,
            pipeline_root=config.pipeline_root,
            # On: each task as compiled (a Pusher waiting for approval is never cached).
            enable_caching=None if enable_caching else False)
    except Exception as e:  # the client raises urllib3/ApiException/ValueError: say where
        raise KubeflowError(f"Kubeflow Pipelines at {host} refused the run or could not be "
                            f"reached: {type(e).__name__}: {str(e).strip()[:500]}") from e
