"""Run a compiled Vertex AI PipelineJob on this machine, task by task, as Vertex would.

For each container task it builds the ExecutorInput Vertex builds (input artifacts from the
upstream outputs with the spec's own type schemas, parameters, output URIs and the output
file under the pipeline root) and runs the task's own `command` + `args` from the spec's
`deploymentSpec` (TFX's container entrypoint, TFX's executors) as a subprocess, then reads
its ExecutorOutput. A task's `preCacheCheck` hook (ExampleGen's driver) runs first, and its
output updates the task's parameters and artifacts, as on Vertex. Resolver tasks run their
filter queries over the artifacts of earlier offline runs (artifact_store.py).

Cloud boundaries are replaced at the narrowest point and nowhere else:
  gs://BUCKET/...      -> OFFLINE_ROOT/gcs/BUCKET/... (one rewrite of the job's text)
  Dataflow             -> Beam's DirectRunner (the task's --runner flag)
  Vertex CustomJob     -> its worker pools as local processes, with CLUSTER_SPEC and
                          TF_CONFIG on 127.0.0.1 ports; shapes Vertex refuses are refused
  endpoint upload/deploy -> a local endpoint registry; the deployed SavedModel is loaded
The last two are the API clients inside the task's process (vertex_boundary.py, installed
by the `sitecustomize` in boundary/ on the task's PYTHONPATH). The image's project is a
folder the Dockerfile's COPY lines are replayed into (image_tree.py), which every task runs
from with nothing of the checkout on its import path; its `python` is this interpreter,
which has the same lock installed.

Step caching as Vertex does it: a task compiled with `cachingOptions.enableCache` whose
cache key (its container, its parameters after the `preCacheCheck` hook, the names of its
input artifacts, its output definitions) matches a task that succeeded in an earlier run
under the same root does not run; its outputs are that run's artifacts, so the tasks
downstream of it hit too. `caching=False` is `--no-job-cache` (Vertex's enable_caching
False). What it cannot prove: IAM, quotas, that the images exist in their registries,
Dataflow's and Vertex's own scheduling. Ready tasks run side by side, as on Vertex, up to
`parallelism` (the cores) at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.orchestration.artifact_store import ArtifactStore, schema_title
from pipeline.orchestration.image_tree import assemble, task_env
from pipeline.orchestration.vertex_boundary import ROOT_ENV, image_command, tail
from settings.layout import IMAGE_PROJECT_DIR, PROJECT_ROOT

log = logging.getLogger(__name__)

# Beam flags that only mean something to Dataflow; everything else reaches the DirectRunner.
# --sdk_container_image stays: the DirectRunner ignores it, and it tells TFX's executors, as
# on Vertex, that the workers already hold TFX (else each builds an sdist of it).
DATAFLOW_ONLY = ("--runner", "--experiments", "--machine_type",
                 "--max_num_workers", "--num_workers", "--service_account_email",
                 "--worker_machine_type", "--subnetwork", "--network", "--region")


class OfflineRunError(RuntimeError):
    """A task failed, or the spec asks for something this runner cannot do (it says which)."""


@dataclass
class TaskResult:
    name: str
    state: str  # SUCCEEDED | FAILED | SKIPPED
    seconds: float = 0.0
    log: str = ""


@dataclass
class OfflineRun:
    """One run of a compiled PipelineJob JSON. `root` stands for gs:// and keeps the state
    (artifacts for the resolvers, endpoints, logs) that later runs read."""

    job_path: Path
    root: Path
    # "kubeflow": as open-source Kubeflow Pipelines runs it, whose backend runs no
    # `preCacheCheck` hook and no resolver task (kubeflow.spec_problems refuses those).
    target: str = "vertex"
    task_timeout: float = 3600.0
    # Tasks running at once (Vertex starts every ready task; here each is a process that
    # imports TFX, so more than the cores buys nothing).
    parallelism: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    echo: Callable[[str], None] = print
    caching: bool = True  # each task as compiled; False: none (--no-job-cache)
    results: list[TaskResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.gcs = self.root / "gcs"
        # The image's copy of the project: every task runs from it and imports nothing of
        # the checkout, so a module the Dockerfile leaves out fails here as on Vertex.
        self.image = assemble(self.root / "image")
        self.store = ArtifactStore(self.root / "metadata" / "artifacts.jsonl")
        self.cache = StepCache(self.root / "metadata" / "step_cache.jsonl")
        self.cached: set[str] = set()
        job = json.loads(localize(self.job_path.read_text(), self.gcs, self.image))
        self.spec = job["pipelineSpec"]
        self.pipeline_root = job.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
        if not self.pipeline_root:
            raise OfflineRunError(f"{self.job_path}: runtimeConfig.gcsOutputDirectory is empty")
        self.job_id = f"{self.spec['pipelineInfo']['name']}-" \
                      f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.logs = self.root / "logs" / self.job_id
        self.produced: dict[str, dict[str, list[dict[str, Any]]]] = {}
        if self.parallelism < 1:
            raise OfflineRunError(f"parallelism must be at least 1, not {self.parallelism}")

    # ------------------------------------------------------------------ the DAG

    def run(self) -> bool:
        """Every task whose upstream tasks succeeded starts, up to `parallelism` at a time,
        as Vertex starts all ready tasks at once. After a failure nothing new starts; the
        tasks already running finish, and the rest are SKIPPED."""
        tasks = self.spec["root"]["dag"]["tasks"]
        needs = task_needs(tasks)
        task_order(tasks)  # refuses a cycle before anything runs
        total = len(needs)
        self.echo(f"offline {self.target} run {self.job_id}: {total} tasks, up to "
                  f"{self.parallelism} at a time, pipeline root {self.pipeline_root}")
        done: set[str] = set()
        failed: list[str] = []
        running: dict[Future, tuple[str, float]] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            while True:
                if not failed:
                    started = {n for n, _ in running.values()}
                    ready = [n for n, up in needs.items()
                             if n not in done and n not in started and up <= done]
                    # Resolvers first: they are instant and read only earlier runs' artifacts.
                    for name in sorted(ready, key=lambda n: (not self.is_resolver(tasks[n]), n)):
                        if len(running) >= self.parallelism:
                            break
                        running[pool.submit(self.run_task, name, tasks[name])] = \
                            (name, time.monotonic())
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: running[f][0]):
                    name, started_at = running.pop(future)
                    seconds = time.monotonic() - started_at
                    prefix = f"[{len(self.results) + 1:>2}/{total}] {name:<52}"
                    error = future.exception()
                    if error is None:
                        done.add(name)
                        self.results.append(TaskResult(name, "SUCCEEDED", seconds))
                        self.echo(f"{prefix} cached (an earlier run's outputs)"
                                  if name in self.cached else f"{prefix} done in {seconds:6.1f} s")
                    else:
                        failed.append(name)
                        self.results.append(TaskResult(name, "FAILED", seconds, str(error)))
                        self.echo(f"{prefix} FAILED after {seconds:.1f} s\n{error}")
                        if not isinstance(error, OfflineRunError):
                            raise error
        for name in task_order(tasks):
            if name not in done and name not in failed:
                self.results.append(TaskResult(name, "SKIPPED"))
                self.echo(f"[{len(self.results):>2}/{total}] {name:<52} skipped "
                          f"(upstream {failed[0]} failed)")
        self._write_run_record()
        return not failed

    def is_resolver(self, task: dict[str, Any]) -> bool:
        component = self.spec["components"][task["componentRef"]["name"]]
        return "resolver" in self.spec["deploymentSpec"]["executors"][component["executorLabel"]]

    def run_task(self, name: str, task: dict[str, Any]) -> None:
        if "triggerPolicy" in task or "iteratorPolicy" in task:
            raise OfflineRunError(f"task {name}: conditions and loops are not supported offline")
        component = self.spec["components"][task["componentRef"]["name"]]
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        inputs = self.input_artifacts(name, task)
        if "resolver" in executor:
            self.produced[name] = self.resolve(executor["resolver"], inputs)
            return
        if "container" not in executor:
            raise OfflineRunError(f"task {name}: executor kind {sorted(executor)} is not "
                                  "supported offline (only containers and resolvers)")
        task_dir = f"{self.pipeline_root}/{self.job_id}/{name}_{uuid.uuid4().hex[:8]}"
        executor_input = {
            "inputs": {**parameters(name, task, component),
                       "artifacts": {k: {"artifacts": v} for k, v in inputs.items()}},
            "outputs": {"artifacts": self.output_artifacts(component, task_dir),
                        "outputFile": f"{task_dir}/executor_output.json"},
        }
        make_output_dirs(executor_input["outputs"]["artifacts"])
        container = executor["container"]
        hook = container.get("lifecycle", {}).get("preCacheCheck")
        if hook and self.target == "vertex":  # ExampleGen's driver: span, version, fingerprint
            self.execute(f"{name}.driver", hook, executor_input)
            merge_driver_output(executor_input, read_output(executor_input))
        key = cache_key(container, executor_input, component) \
            if self.caching and task.get("cachingOptions", {}).get("enableCache") else None
        if key and (earlier := self.cache.get(key)) is not None:
            self.produced[name] = earlier
            self.cached.add(name)
            return
        self.execute(name, container, executor_input)
        outputs = executor_input["outputs"]["artifacts"]
        merge_outputs(outputs, read_output(executor_input))
        self.produced[name] = {k: v["artifacts"] for k, v in outputs.items()}
        if key:
            self.cache.put(key, self.produced[name])
        for artifacts in self.produced[name].values():
            for artifact in artifacts:
                self.store.add(artifact, task=name, job=self.job_id)

    def input_artifacts(self, name: str, task: dict[str, Any]) -> dict[str, list[dict]]:
        inputs = {}
        for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in spec:
                raise OfflineRunError(f"task {name}: input {key} is {sorted(spec)}; only "
                                      "upstream task outputs are supported offline")
            source = spec["taskOutputArtifact"]
            artifacts = self.produced[source["producerTask"]].get(source["outputArtifactKey"], [])
            if artifacts:  # an empty resolver leaves an optional input out, as on Vertex
                inputs[key] = artifacts
        return inputs

    def output_artifacts(self, component: dict[str, Any], task_dir: str) -> dict[str, Any]:
        store_prefix = "projects/offline/locations/offline/metadataStores/default/artifacts"
        return {
            key: {"artifacts": [{
                "name": f"{store_prefix}/{uuid.uuid4().hex}",
                "type": definition["artifactType"],
                "uri": f"{task_dir}/{key}",
                "metadata": dict(definition.get("metadata", {})),
            }]}
            for key, definition in component.get("outputDefinitions", {})
            .get("artifacts", {}).items()
        }

    def resolve(self, resolver: dict[str, Any], inputs: dict[str, list[dict]]) -> dict:
        out = {}
        for key, query in resolver.get("outputArtifactQueries", {}).items():
            out[key] = self.store.query(query["filter"], inputs, int(query.get("limit", 1)))
        return out

    def execute(self, name: str, container: dict[str, Any], executor_input: dict) -> None:
        command = image_command([*container.get("command", []), *container.get("args", [])])
        command = direct_runner_args(substitute(command, executor_input, name))
        env = task_env(self.image, {ROOT_ENV: str(self.root)})
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with log_path.open("w") as out:
            try:
                code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      cwd=self.image, timeout=self.task_timeout).returncode
            except subprocess.TimeoutExpired:
                code = f"timeout after {self.task_timeout:.0f} s"
        if code != 0:
            raise OfflineRunError(
                f"  task {name} exited {code}\n  command: {' '.join(command[:4])} ...\n"
                f"  log: {log_path}\n  last lines:\n" + tail(log_path))

    # ------------------------------------------------------------------ reporting

    def outputs_of(self, task: str, key: str) -> list[dict[str, Any]]:
        return self.produced.get(task, {}).get(key, [])

    def _write_run_record(self) -> None:
        path = self.root / "runs" / f"{self.job_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "job_id": self.job_id, "pipeline_root": self.pipeline_root,
            "tasks": [r.__dict__ for r in self.results],
            "outputs": self.produced}, indent=1))


# ---------------------------------------------------------------------- helpers


def cache_key(container: dict[str, Any], executor_input: dict[str, Any],
              component: dict[str, Any]) -> str:
    """What Vertex's step cache keys a task by: its container, its parameters, the names of
    its input artifacts (new upstream outputs: a new key) and its output definitions; not
    its output URIs, which are new in every run."""
    inputs = executor_input["inputs"]
    material = {
        "container": container,
        "parameters": {k: v for k, v in inputs.items() if k != "artifacts"},
        "artifacts": {k: [a["name"] for a in v["artifacts"]]
                      for k, v in sorted(inputs.get("artifacts", {}).items())},
        "outputs": component.get("outputDefinitions", {}),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class StepCache:
    """key -> the outputs of the task that succeeded with it (the newest wins)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, list[dict[str, Any]]] | None:
        if not self.path.exists():
            return None
        found = None
        for line in self.path.read_text().splitlines():
            record = json.loads(line) if line else {}
            if record.get("key") == key:
                found = record["outputs"]
        return found

    def put(self, key: str, outputs: dict[str, list[dict[str, Any]]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps({"key": key, "outputs": outputs}) + "\n")


def localize(job_text: str, gcs_dir: Path, image_dir: Path = PROJECT_ROOT) -> str:
    """Every gs:// URI in the job (roots, parameters, JSON inside parameters) under gcs_dir,
    and paths into the image's copy of the project (the schema) into `image_dir`, the
    folder that stands for it."""
    for quote in ('"', '\\"'):
        job_text = job_text.replace(f"{quote}{IMAGE_PROJECT_DIR}/", f"{quote}{image_dir}/")
    return job_text.replace("gs://", f"{gcs_dir.as_posix()}/")


def local_path(uri: str, gcs_dir: Path) -> Path:
    return Path(localize(uri, gcs_dir))


# Artifacts that are one file at their URI; every other artifact is a folder.
VALUE_TYPES = {f"tfx.{name}" for name in ("String", "Integer", "Float", "Boolean", "JsonValue",
                                           "Bytes")}


def make_output_dirs(outputs: dict[str, Any]) -> None:
    """On GCS any path can be written without creating folders; on a disk they must exist
    (TFX's local launcher makes them the same way: a folder per artifact, the parent of a
    value artifact's file)."""
    for entry in outputs.values():
        for artifact in entry["artifacts"]:
            uri = Path(artifact["uri"])
            is_file = schema_title(artifact["type"]) in VALUE_TYPES
            (uri.parent if is_file else uri).mkdir(parents=True, exist_ok=True)


def task_needs(tasks: dict[str, Any]) -> dict[str, set[str]]:
    """Each task's upstream tasks: its `dependentTasks` and the producers of its inputs."""
    needs = {}
    for name, task in tasks.items():
        upstream = set(task.get("dependentTasks", []))
        for spec in task.get("inputs", {}).get("artifacts", {}).values():
            if "taskOutputArtifact" in spec:
                upstream.add(spec["taskOutputArtifact"]["producerTask"])
        needs[name] = upstream
    return needs


def task_order(tasks: dict[str, Any]) -> list[str]:
    """Tasks in dependency order (upstream first); ties by name, so runs are repeatable."""
    needs = task_needs(tasks)
    order: list[str] = []
    while needs:
        ready = sorted(n for n, up in needs.items() if not up - set(order))
        if not ready:
            raise OfflineRunError(f"the DAG has a cycle among {sorted(needs)}")
        order += ready
        for n in ready:
            del needs[n]
    return order


def parameters(name: str, task: dict[str, Any], component: dict[str, Any]) -> dict[str, Any]:
    """Task parameters both as the legacy `parameters` (Value) and as `parameterValues`,
    as Vertex fills the ExecutorInput for a schema 2.0 spec."""
    legacy, values = {}, {}
    for key, spec in task.get("inputs", {}).get("parameters", {}).items():
        runtime = spec.get("runtimeValue")
        if runtime is None:
            raise OfflineRunError(f"task {name}: parameter {key} is {sorted(spec)}; the "
                                  "pipeline declares no runtime parameters to fill it")
        if "constantValue" in runtime:
            value = runtime["constantValue"]
            legacy[key] = value
            (kind, raw), = value.items()
            values[key] = int(raw) if kind == "intValue" else raw
        else:  # schema 2.1: a plain JSON constant
            values[key] = runtime["constant"]
            legacy[key] = _legacy_value(runtime["constant"])
    return {"parameters": legacy, "parameterValues": values}


def _legacy_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {"stringValue": value if isinstance(value, str) else json.dumps(value)}
    if isinstance(value, int) or float(value).is_integer():
        return {"intValue": str(int(value))}
    return {"doubleValue": value}


def substitute(command: list[str], executor_input: dict[str, Any], name: str) -> list[str]:
    out = []
    for arg in command:
        if arg == "{{$}}":
            out.append(json.dumps(executor_input))
        elif "{{$" in arg:
            raise OfflineRunError(f"task {name}: placeholder in {arg!r} is not supported offline")
        else:
            out.append(arg)
    return out


def direct_runner_args(command: list[str]) -> list[str]:
    """Dataflow -> the DirectRunner, in the task's own Beam flags; nothing else changes."""
    if "--runner=DataflowRunner" not in command:
        return command
    kept = [a for a in command if a.split("=", 1)[0] not in DATAFLOW_ONLY]
    return kept + ["--runner=DirectRunner", "--direct_running_mode=in_memory",
                   "--direct_num_workers=1"]


def read_output(executor_input: dict[str, Any]) -> dict[str, Any]:
    path = Path(executor_input["outputs"]["outputFile"])
    return json.loads(path.read_text()) if path.exists() else {}


def merge_outputs(outputs: dict[str, Any], executor_output: dict[str, Any]) -> None:
    """What the task wrote of its artifacts (URI, metadata) replaces what it was handed."""
    for key, written in executor_output.get("artifacts", {}).items():
        if key in outputs and written.get("artifacts"):
            artifact = outputs[key]["artifacts"][0]
            new = written["artifacts"][0]
            artifact["uri"] = new.get("uri") or artifact["uri"]
            artifact["metadata"] = {**artifact["metadata"], **new.get("metadata", {})}


def merge_driver_output(executor_input: dict[str, Any], driver_output: dict[str, Any]) -> None:
    """Vertex updates the task's parameters and output artifacts from the driver's output."""
    inputs = executor_input["inputs"]
    for key, value in driver_output.get("parameterValues", {}).items():
        inputs["parameterValues"][key] = value
        inputs["parameters"][key] = _legacy_value(value)
    merge_outputs(executor_input["outputs"]["artifacts"], driver_output)


def link_data(data: Path, target: Path) -> None:
    """The user's (or the bundled) data at the local stand-in of DATA_ROOT."""
    data = data.resolve()
    if not data.is_dir():
        raise OfflineRunError(f"offline data {data} is not a directory")
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(data, target_is_directory=True)
