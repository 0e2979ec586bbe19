"""Which tf.distribute strategy the Trainer trains under: chosen here, and only here.

`auto` reads the cluster the platform describes in TF_CONFIG (Vertex sets it for every
replica of a CustomJob; on your own machines you set it yourself, see the README):
  parameter servers in the cluster  -> ParameterServerStrategy (this process coordinates
                                       if it is the chief; workers and servers serve)
  workers in the cluster            -> MultiWorkerMirroredStrategy (synchronous all-reduce)
  several local GPUs                -> MirroredStrategy
  otherwise                         -> the default strategy (one device)

What the training settings mean under every strategy:
  batch_size   the GLOBAL batch: one optimizer step sees this many examples, split evenly
               over the replicas (per-replica batch = batch_size / replicas)
  train_steps  optimizer steps, whatever the number of replicas: N replicas take the same
               number of steps on N times less data each
Input is sharded by DATA: Transform may write fewer files than there are workers, and
file sharding would leave a worker with nothing to read.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import models  # noqa: F401  (Keras 2 before TensorFlow)

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "none", "mirrored", "multi_worker", "parameter_server")
# A peer that never arrives, or dies, ends training with an error after this long.
PEER_TIMEOUT_ENV = "TAXI_DISTRIBUTION_TIMEOUT_SECONDS"
DEFAULT_PEER_TIMEOUT = 300
# Split the CPU into N logical devices: MirroredStrategy on a machine without GPUs, to try
# (and test) synchronous training across devices; it is no faster than one device.
LOGICAL_CPUS_ENV = "TAXI_LOGICAL_CPUS"


class DistributionError(RuntimeError):
    """The strategy asked for cannot run in this cluster; the message says what to set."""


@dataclass
class Distribution:
    name: str  # one of STRATEGIES but auto
    reason: str
    strategy: Any = None
    replicas: int = 1
    task_type: str = "chief"
    task_index: int = 0
    tf_config: dict = field(default_factory=dict)
    watchdog: Watchdog | None = None

    @property
    def is_chief(self) -> bool:
        """Whose SavedModel, TensorBoard log and history are the Trainer's output."""
        return self.task_type in ("chief", "master") or (
            self.task_type == "worker" and self.task_index == 0
            and "chief" not in self.tf_config.get("cluster", {}))

    @property
    def serves_only(self) -> bool:
        """Under parameter servers, workers and servers run a server; the chief trains."""
        return self.name == "parameter_server" and self.task_type in ("worker", "ps")

    def describe(self) -> str:
        where = f"task {self.task_type}:{self.task_index}, " if self.tf_config else ""
        return f"{self.name} ({where}{self.replicas} replica(s)): {self.reason}"


def peer_timeout() -> float:
    return float(os.environ.get(PEER_TIMEOUT_ENV, DEFAULT_PEER_TIMEOUT))


def tf_config_from_env() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise DistributionError(f"TF_CONFIG is not JSON ({e}): {raw[:200]}") from None


def plan(setting: str, tf_config: dict[str, Any], gpus: int) -> tuple[str, str]:
    """(strategy name, why) for `setting`, the cluster in `tf_config` and the local GPUs."""
    if setting not in STRATEGIES:
        raise DistributionError(f"distribution {setting!r} is not one of "
                                f"{', '.join(STRATEGIES)} (--distribution or TAXI_DISTRIBUTION)")
    cluster = tf_config.get("cluster", {})
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    servers = len(cluster.get("ps", []))
    if setting == "auto":
        if servers:
            return "parameter_server", f"TF_CONFIG has {servers} parameter server(s)"
        if workers > 1:
            return "multi_worker", f"TF_CONFIG has {workers} workers"
        if gpus > 1:
            return "mirrored", f"{gpus} local GPUs"
        return "none", "one worker, at most one GPU" if not cluster else \
            "TF_CONFIG has a single worker"
    if setting == "multi_worker" and workers < 1:
        raise DistributionError("distribution multi_worker needs a cluster in TF_CONFIG "
                                "(on Vertex: --training-workers N)")
    if setting == "parameter_server" and (servers < 1 or workers < 1):
        raise DistributionError("distribution parameter_server needs parameter servers and "
                                "workers in TF_CONFIG (on Vertex: --training-workers N "
                                "--training-parameter-servers M)")
    if setting in ("none", "mirrored") and workers > 1:
        raise DistributionError(f"distribution {setting} trains on one machine, but TF_CONFIG "
                                f"describes {workers} workers: every one would train its own "
                                "model; use multi_worker or auto")
    return setting, "set by --distribution / TAXI_DISTRIBUTION"


def choose(setting: str = "auto", tf_config: dict[str, Any] | None = None) -> Distribution:
    """Builds the strategy. Call once per process, before any model is built."""
    import tensorflow as tf

    tf_config = tf_config_from_env() if tf_config is None else tf_config
    logical_cpus = int(os.environ.get(LOGICAL_CPUS_ENV, "0") or 0)
    if logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    gpus = len(tf.config.list_physical_devices("GPU"))  # logical ones would start TF
    name, reason = plan(setting, tf_config, gpus)
    task = tf_config.get("task", {})
    chosen = Distribution(name, reason, task_type=task.get("type", "chief"),
                          task_index=int(task.get("index", 0)), tf_config=tf_config)
    timeout = peer_timeout()
    if name == "none":
        chosen.strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        chosen.strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    elif name == "multi_worker":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        # Disarmed by the first training step (models.model.fit): all peers took part.
        chosen.watchdog = Watchdog(timeout, "the other workers did not join")
        chosen.strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver,
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=timeout))
    elif not chosen.serves_only:  # parameter_server, this process coordinates
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        # Connecting waits for every server and worker, for ever: bounded here.
        watchdog = Watchdog(timeout, "the parameter servers and workers did not join")
        chosen.strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
        watchdog.disarm()  # connected (Keras takes no per-step callback under this strategy)
    if chosen.strategy is not None:
        chosen.replicas = chosen.strategy.num_replicas_in_sync
    log.info("distribution: %s", chosen.describe())
    return chosen


# The watcher: a separate process, since TF can block in C++ without releasing the GIL,
# where no Python thread or signal handler of this process would ever run again.
WATCHER = """
import os, select, signal, sys
ready, _, _ = select.select([sys.stdin], [], [], float(sys.argv[1]))
if not ready:
    sys.stderr.write(sys.argv[2] + "\\n")
    sys.stderr.flush()
    os.kill(int(sys.argv[3]), signal.SIGKILL)
"""


class Watchdog:
    """Kills this process, saying why, if it is not disarmed within `seconds`: a cluster
    whose peers never arrive would otherwise wait for ever (TF blocks in the first
    collective, not when the strategy is built). Exiting normally disarms it too."""

    def __init__(self, seconds: float, what: str):
        message = (f"distribution: {what} within {seconds:.0f} s ({PEER_TIMEOUT_ENV}); "
                   f"TF_CONFIG: {os.environ.get('TF_CONFIG', '')}")
        self.process = subprocess.Popen(
            [sys.executable, "-c", WATCHER, str(seconds), message, str(os.getpid())],
            stdin=subprocess.PIPE)

    def disarm(self) -> None:
        if self.process.poll() is None and not self.process.stdin.closed:
            self.process.stdin.close()  # end of input: the watcher returns at once
            self.process.wait()


def serve(chosen: Distribution) -> None:
    """A parameter-server cluster's worker or server: serve until the job ends."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=chosen.task_type,
                                  task_index=chosen.task_index, protocol="grpc", start=True)
    log.info("parameter-server cluster: %s %d serving", chosen.task_type, chosen.task_index)
    server.join()

