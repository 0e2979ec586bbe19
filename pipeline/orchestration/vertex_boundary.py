"""The Vertex API clients, replaced inside an offline task's process (and nowhere else).

TFX's Vertex Trainer and Tuner executors create a CustomJob with
`google.cloud.aiplatform.gapic.JobServiceClient` and poll it; TFX's Vertex Pusher uploads
and deploys with `aiplatform.Model` and `aiplatform.Endpoint`. Offline those names are
bound to the classes below when the SDK is imported (boundary/sitecustomize.py), so every
line of TFX's code before the network call runs as on Vertex:

- `create_custom_job` checks the job as Vertex does (it parses as the API's CustomJob
  message, worker pool 0 has exactly one replica, every pool an image and a machine type,
  ...) and refuses what Vertex refuses with the same error class (InvalidArgument); it then
  starts every replica of every pool as a local process running the pool's own command,
  with the CLUSTER_SPEC and TF_CONFIG Vertex gives each replica, on free 127.0.0.1 ports.
- `get_custom_job` waits for the job, bounded in time (and by its scheduling timeout): the
  job succeeds when the primary replica (pool 0) succeeds and fails when a replica exits
  with an error (the others are stopped). A replica killed by a signal, as a reclaimed Spot
  VM or a maintenance event ends it, is started again under the same address, as Vertex
  restarts a replica with the same hostname; with scheduling.restart_job_on_worker_restart
  every replica is. PREEMPT_ENV names a replica to kill so, once, after its first backup.
- `Model.upload` refuses a prediction image Vertex does not provide; `Model.deploy` loads
  the SavedModel and replays its warmup requests, as the serving container would on load,
  and records the endpoint's models and traffic split under OFFLINE_ROOT/endpoints.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from models.local_cluster import free_ports

log = logging.getLogger("offline-vertex")

ROOT_ENV = "TAXI_OFFLINE_VERTEX_ROOT"
JOB_TIMEOUT_ENV = "TAXI_OFFLINE_JOB_TIMEOUT"
# After the primary replica succeeds, how long other workers get to finish on their own.
WORKER_GRACE_SECONDS = 120.0
# TF_CONFIG task types of Vertex's worker pools 0..2 (pool 3, evaluators, is not offline).
TF_TASK_TYPES = ("chief", "worker", "ps")
# A replica label (workerpool1-0) to preempt once, after its log shows its first backup.
PREEMPT_ENV = "TAXI_OFFLINE_PREEMPT"
MAX_RESTARTS = 3  # lost replicas a job survives; past that it fails


def offline_root() -> Path:
    return Path(os.environ[ROOT_ENV])


def image_command(command: list[str]) -> list[str]:
    """A container's command as it runs here: the image's `python` is this interpreter
    (the Dockerfile installs the same lock and code)."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log, indented, for an error message."""
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + line for line in text[-lines:])


# ---------------------------------------------------------------------- CustomJob


def as_message(custom_job: dict[str, Any]):
    """The API's CustomJob message, or ValueError/TypeError naming a field it does not
    have or a value of the wrong kind (what the API answers with INVALID_ARGUMENT)."""
    from google.cloud.aiplatform_v1.types import custom_job as types

    return types.CustomJob(**custom_job)


def job_spec_problems(custom_job: dict[str, Any]) -> list[str]:
    """What Vertex would reject in a CustomJob (its message, documented worker pool rules)."""
    spec = custom_job.get("job_spec") or {}
    pools = spec.get("worker_pool_specs") or []
    problems = []
    try:
        as_message(custom_job)
    except (ValueError, TypeError, KeyError) as e:
        problems.append(f"not a CustomJob message: {e}")
    if not pools:
        problems.append("job_spec.worker_pool_specs is empty")
    if len(pools) > 4:
        problems.append(f"{len(pools)} worker pools; Vertex takes at most 4")
    if len(pools) > 3 and pools[3]:
        problems.append("worker pool 3 (evaluators) is not run offline")
    for i, pool in enumerate(pools):
        if not pool:
            if i == 0:
                problems.append("worker pool 0 (the primary replica) is empty")
            continue  # an empty pool is a placeholder Vertex skips
        replicas = pool.get("replica_count", 1 if i == 0 else 0)
        if i == 0 and int(replicas) != 1:
            problems.append(f"worker pool 0 has replica_count {replicas}; Vertex reserves it "
                            "for exactly one primary replica (put the other workers in pool 1)")
        if i > 0 and int(replicas) < 1:
            problems.append(f"worker pool {i} has replica_count {replicas}; it must be >= 1 "
                            "(or the pool empty)")
        machine = pool.get("machine_spec") or {}
        if not machine.get("machine_type"):
            problems.append(f"worker pool {i} has no machine_spec.machine_type")
        if machine.get("accelerator_type") and int(machine.get("accelerator_count", 0)) < 1:
            problems.append(f"worker pool {i} names accelerator_type "
                            f"{machine['accelerator_type']} with accelerator_count < 1")
        container = pool.get("container_spec") or {}
        if not container.get("image_uri"):
            problems.append(f"worker pool {i} has an empty container_spec.image_uri")
        if not container.get("command") and not container.get("args"):
            problems.append(f"worker pool {i} has no command to run")
    return problems


def cluster_env(ports: dict[int, list[int]], job_spec: dict, pool: int,
                index: int) -> dict[str, str]:
    """CLUSTER_SPEC and TF_CONFIG for one replica, as Vertex sets them."""
    addresses = {i: [f"127.0.0.1:{p}" for p in ports[i]] for i in ports}
    cluster_spec = {
        "cluster": {f"workerpool{i}": a for i, a in addresses.items()},
        "environment": "cloud",
        "task": {"type": f"workerpool{pool}", "index": index},
        "job": job_spec,
    }
    tf_config = {
        "cluster": {TF_TASK_TYPES[i]: a for i, a in addresses.items()},
        "task": {"type": TF_TASK_TYPES[pool], "index": index},
        "environment": "cloud",
    }
    return {"CLUSTER_SPEC": json.dumps(cluster_spec), "TF_CONFIG": json.dumps(tf_config)}


class Replica:
    """One replica: its command and environment, kept to start it again after a loss."""

    def __init__(self, label: str, command: list[str], env: dict[str, str], directory: Path):
        self.label, self.command, self.env = label, command, env
        self.directory = directory
        self.scratch = directory / label  # each replica is its own container
        self.scratch.mkdir(exist_ok=True)
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self.log = directory / f"{label}.log"

    def start(self) -> None:
        self.starts += 1
        if self.starts > 1:  # the first attempt's log stays as it was
            self.log = self.directory / f"{self.label}.restart-{self.starts - 1}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=self.scratch)

    @property
    def code(self) -> int | None:
        return self.process.poll() if self.process else None


def stop(replicas: list[Replica]) -> None:
    """Terminates every replica still running, then waits for each (10 s, then kills)."""
    running = [r.process for r in replicas if r.process and r.process.poll() is None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LocalCustomJob:
    """The replicas of one CustomJob, as local processes."""

    def __init__(self, name: str, custom_job: dict[str, Any]):
        self.name = name
        self.display_name = custom_job.get("display_name", "")
        spec = custom_job["job_spec"]
        pools = spec["worker_pool_specs"]
        scheduling = as_message(custom_job).job_spec.scheduling
        self.restart_job = bool(scheduling.restart_job_on_worker_restart)
        self.timeout = scheduling.timeout.total_seconds() if scheduling.timeout else None
        self.directory = offline_root() / "jobs" / name.rsplit("/", 1)[-1]
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "custom_job.json").write_text(json.dumps(custom_job, indent=1))
        ports = {i: free_ports(int(pool.get("replica_count", 1)))
                 for i, pool in enumerate(pools) if pool}
        self.replicas: list[Replica] = []
        for i, pool in ports.items():
            container = pools[i]["container_spec"]
            command = image_command([*container.get("command", []),
                                     *container.get("args", [])])
            for index in range(len(pool)):
                env = {**os.environ, **cluster_env(ports, spec, i, index),
                       **{e["name"]: e["value"] for e in container.get("env", [])}}
                self.replicas.append(Replica(f"workerpool{i}-{index}", command, env,
                                             self.directory))
        for replica in self.replicas:
            replica.start()
        self.to_preempt = os.environ.get(PREEMPT_ENV, "")
        self.restarts = 0
        log.info("offline CustomJob %s: %s; logs in %s", self.display_name,
                 ", ".join(r.label for r in self.replicas), self.directory)
        self.state, self.error = "JOB_STATE_RUNNING", ""

    def wait(self, timeout: float) -> None:
        """Until the job ends: the primary replica succeeds, a replica fails, or time's up."""
        if self.timeout:
            timeout = min(timeout, self.timeout)
        deadline = time.monotonic() + timeout
        primary = self.replicas[0]
        while self.state == "JOB_STATE_RUNNING":
            self._preempt_when_due()
            lost = [r for r in self.replicas if (r.code or 0) < 0]
            failed = [r for r in self.replicas if (r.code or 0) > 0]
            if lost:
                self._restart(lost)
            elif failed:
                self._end("JOB_STATE_FAILED", f"replica {failed[0].label} exited "
                          f"{failed[0].code}; its log {failed[0].log} ends:\n"
                          f"{tail(failed[0].log, 15)}")
            elif primary.code == 0:
                self._finish_workers()
            elif time.monotonic() > deadline:
                self._end("JOB_STATE_FAILED", f"job did not finish within {timeout:.0f} s "
                          f"({JOB_TIMEOUT_ENV} or the job's scheduling.timeout); replicas "
                          "stopped")
            else:
                time.sleep(0.5)

    def _preempt_when_due(self) -> None:
        """Kills the replica PREEMPT_ENV names, once, as a reclaimed VM dies: no warning."""
        replica = next((r for r in self.replicas if r.label == self.to_preempt), None)
        if replica is None or replica.code is not None or not replica.log.exists():
            return
        from models.fault_tolerance import BACKED_UP  # here: TensorFlow, only when asked

        if BACKED_UP in replica.log.read_text(errors="replace"):
            replica.process.kill()
            replica.process.wait()
            self.to_preempt = ""
            log.warning("offline CustomJob %s: replica %s preempted (SIGKILL) after its first "
                        "backup", self.display_name, replica.label)

    def _restart(self, lost: list[Replica]) -> None:
        """As Vertex restarts a lost replica (with every other one, with
        restart_job_on_worker_restart); a job that keeps losing replicas fails."""
        labels = ", ".join(f"{r.label} (signal {-r.code})" for r in lost)
        if self.restarts >= MAX_RESTARTS:
            self._end("JOB_STATE_FAILED", f"replica {labels} lost after {self.restarts} "
                      "restarts; the job gives up")
            return
        self.restarts += 1
        again = self.replicas if self.restart_job else lost
        stop(again)
        for replica in again:
            replica.start()
        log.warning("offline CustomJob %s: %s lost; restarted %s", self.display_name, labels,
                    "every replica (restart_job_on_worker_restart)" if self.restart_job
                    else "it alone")

    def _finish_workers(self) -> None:
        deadline = time.monotonic() + WORKER_GRACE_SECONDS
        servers = any(r.label.startswith("workerpool2") for r in self.replicas)
        for replica in self.replicas[1:]:
            if servers:
                break  # with parameter servers, workers and servers serve until the job ends
            try:
                code = replica.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("replica %s still running %.0f s after the primary finished; "
                            "stopped", replica.label, WORKER_GRACE_SECONDS)
                continue
            if code != 0:
                self._end("JOB_STATE_FAILED", f"replica {replica.label} exited {code}; its "
                          f"log {replica.log} ends:\n{tail(replica.log, 15)}")
                return
        self._end("JOB_STATE_SUCCEEDED", "")

    def _end(self, state: str, error: str) -> None:
        stop(self.replicas)
        self.state, self.error = state, error
        log.info("offline CustomJob %s: %s %s", self.display_name, state, error)


_JOBS: dict[str, LocalCustomJob] = {}


class OfflineJobServiceClient:
    """`gapic.JobServiceClient` for the calls TFX's Vertex training client makes."""

    def __init__(self, *args: Any, client_options: Any = None, **kwargs: Any):
        endpoint = (client_options or {}).get("api_endpoint", "") \
            if isinstance(client_options, dict) else getattr(client_options, "api_endpoint", "")
        self.region = endpoint.split("-aiplatform")[0]

    def create_custom_job(self, parent: str, custom_job: dict[str, Any], **_: Any):
        from google.api_core import exceptions

        problems = job_spec_problems(custom_job)
        if problems:
            raise exceptions.InvalidArgument(
                "offline Vertex refuses the CustomJob as Vertex would: " + "; ".join(problems))
        name = f"{parent}/customJobs/{uuid.uuid4().int % 10**18}"
        _JOBS[name] = LocalCustomJob(name, custom_job)
        return self._proto(_JOBS[name])

    def get_custom_job(self, name: str, **_: Any):
        job = _JOBS[name]
        job.wait(float(os.environ.get(JOB_TIMEOUT_ENV, "3600")))
        return self._proto(job)

    @staticmethod
    def _proto(job: LocalCustomJob):
        from google.cloud.aiplatform_v1.types import custom_job, job_state
        from google.rpc import status_pb2

        return custom_job.CustomJob(name=job.name, display_name=job.display_name,
                                    state=job_state.JobState[job.state],
                                    error=status_pb2.Status(code=2 if job.error else 0,
                                                            message=job.error))


# ---------------------------------------------------------------------- endpoints


def _endpoints_file() -> Path:
    return offline_root() / "endpoints.json"


def _load_endpoints() -> dict[str, Any]:
    path = _endpoints_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _save_endpoints(endpoints: dict[str, Any]) -> None:
    path = _endpoints_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(endpoints, indent=1))


class DeployedModel:
    def __init__(self, record: dict[str, Any]):
        self.id, self.model, self.display_name = record["id"], record["model"], \
            record["display_name"]
        self.artifact_uri = record["artifact_uri"]


class OfflineEndpoint:
    """`aiplatform.Endpoint`, kept in OFFLINE_ROOT/endpoints.json."""

    def __init__(self, endpoint_name: str, *_: Any, **__: Any):
        endpoints = _load_endpoints()
        key = endpoint_name.rsplit("/", 1)[-1]
        if key not in endpoints:
            from google.api_core import exceptions

            raise exceptions.NotFound(f"endpoint {endpoint_name} not found")
        self.resource_name = endpoints[key]["resource_name"]
        self.display_name = endpoints[key]["display_name"]
        self.name = key

    @classmethod
    def list(cls, filter: str = "", **_: Any) -> list[OfflineEndpoint]:  # noqa: A002
        wanted = filter.partition("=")[2].strip('"') if filter else None
        return [cls(key) for key, e in _load_endpoints().items()
                if wanted is None or e["display_name"] == wanted]

    @classmethod
    def create(cls, display_name: str, labels: dict | None = None, **_: Any) -> OfflineEndpoint:
        endpoints = _load_endpoints()
        key = str(uuid.uuid4().int % 10**18)
        endpoints[key] = {"display_name": display_name, "labels": labels or {},
                          "resource_name": f"projects/offline/locations/offline/endpoints/{key}",
                          "deployed_models": [], "traffic_split": {}}
        _save_endpoints(endpoints)
        return cls(key)

    def _record(self) -> dict[str, Any]:
        return _load_endpoints()[self.name]

    @property
    def traffic_split(self) -> dict[str, int]:
        return dict(self._record()["traffic_split"])

    def list_models(self) -> list[DeployedModel]:
        return [DeployedModel(r) for r in self._record()["deployed_models"]]

    def update(self, traffic_split: dict[str, int] | None = None, **_: Any) -> OfflineEndpoint:
        """Vertex's UpdateEndpoint for the split: whole percentages over deployed ids, 100 in
        all; ids left out get no traffic."""
        if traffic_split:
            from google.api_core import exceptions

            endpoints = _load_endpoints()
            record = endpoints[self.name]
            deployed = {m["id"] for m in record["deployed_models"]}
            unknown = sorted(set(traffic_split) - deployed)
            if unknown or sum(traffic_split.values()) != 100 or \
                    any(not isinstance(v, int) or v < 0 for v in traffic_split.values()):
                raise exceptions.InvalidArgument(
                    f"traffic_split {traffic_split}: percentages must be whole, add up to 100, "
                    f"and name deployed models ({sorted(deployed)})")
            record["traffic_split"] = {k: v for k, v in traffic_split.items() if v}
            _save_endpoints(endpoints)
        return self

    def undeploy(self, deployed_model_id: str, **_: Any) -> None:
        endpoints = _load_endpoints()
        record = endpoints[self.name]
        if record["traffic_split"].get(deployed_model_id, 0):
            from google.api_core import exceptions

            raise exceptions.FailedPrecondition(
                f"deployed model {deployed_model_id} still receives traffic")
        record["deployed_models"] = [m for m in record["deployed_models"]
                                     if m["id"] != deployed_model_id]
        record["traffic_split"].pop(deployed_model_id, None)
        _save_endpoints(endpoints)
        log.info("offline endpoint %s: undeployed %s", self.display_name, deployed_model_id)


class OfflineModel:
    """`aiplatform.Model`: upload checks what Vertex would fail on; deploy loads the model."""

    def __init__(self, resource_name: str, display_name: str, artifact_uri: str, image: str):
        self.resource_name, self.display_name = resource_name, display_name
        self.artifact_uri, self.image = artifact_uri, image

    @classmethod
    def upload(cls, display_name: str, artifact_uri: str, serving_container_image_uri: str,
               **_: Any) -> OfflineModel:
        from google.api_core import exceptions

        from serving.vertex_images import serving_image_problem

        problem = serving_image_problem(serving_container_image_uri)
        if problem:
            raise exceptions.InvalidArgument(f"offline Vertex: {problem}")
        if not (Path(artifact_uri) / "saved_model.pb").exists():
            raise exceptions.InvalidArgument(f"no saved_model.pb under {artifact_uri}")
        name = f"projects/offline/locations/offline/models/{uuid.uuid4().int % 10**18}"
        return cls(name, display_name, artifact_uri, serving_container_image_uri)

    def wait(self) -> None:
        pass

    def deploy(self, endpoint: OfflineEndpoint, traffic_percentage: int = 0,
               deployed_model_display_name: str | None = None, **_: Any) -> None:
        from serving import payloads, probe

        warmup = Path(self.artifact_uri) / payloads.WARMUP_FILE
        if warmup.exists():  # what the serving container does on load
            figures = probe.probe(self.artifact_uri, str(warmup), repeats=1)
            if figures["errors"]:
                raise RuntimeError(f"deployed model answers badly: {figures['errors'][:3]}")
            log.info("offline endpoint: model loaded in %.1f s, warmup p99 %.1f ms",
                     figures["load_seconds"], figures["p99_ms"])
        endpoints = _load_endpoints()
        record = endpoints[endpoint.name]
        deployed_id = str(uuid.uuid4().int % 10**12)
        record["deployed_models"].append({
            "id": deployed_id, "model": self.resource_name, "artifact_uri": self.artifact_uri,
            "display_name": deployed_model_display_name or self.display_name,
            "image": self.image})
        # Vertex: the new model gets its share, the others keep theirs in proportion.
        rest, others = 100 - int(traffic_percentage), record["traffic_split"]
        total = sum(others.values())
        split = {k: (round(v * rest / total) if total else 0) for k, v in others.items()}
        if not total and rest:
            traffic_percentage = 100  # the first model takes all traffic
        split[deployed_id] = int(traffic_percentage)
        record["traffic_split"] = split
        _save_endpoints(endpoints)
        log.info("offline endpoint %s: deployed %s (%s) with %s%% of traffic",
                 endpoint.display_name, deployed_id, self.artifact_uri, traffic_percentage)


# ---------------------------------------------------------------------- installation


def patch_aiplatform(aiplatform: Any) -> None:
    """Binds the SDK's network-facing names to the offline classes."""
    from google.cloud.aiplatform import gapic

    gapic.JobServiceClient = OfflineJobServiceClient
    aiplatform.Endpoint = OfflineEndpoint
    aiplatform.Model = OfflineModel
    aiplatform.init = lambda **_: None  # project and location only; no credentials needed
    log.info("offline Vertex: CustomJobs run as local processes, endpoints under %s",
             offline_root())


def after_import(fullname: str, patch) -> None:
    """Calls `patch(module)` once `fullname` has been imported (if it ever is)."""
    import importlib.abc
    import importlib.util

    class AfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's API
            if name != fullname:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            original = spec.loader.exec_module

            def exec_module(module):  # noqa: ANN001
                original(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, AfterImport())


def install() -> None:
    """Patches google.cloud.aiplatform when (if ever) the task's process imports it."""
    after_import("google.cloud.aiplatform", patch_aiplatform)
