"""Pusher that does not push the same model twice.

A rerun with nothing new re-evaluates the (cached) model against itself, since the
resolver now returns it as the baseline, and blesses it again. TFX's Pusher would then
copy it to a new version directory, and TF Serving would load a duplicate. This Pusher
compares the candidate's files with the newest pushed version and, when they are the
same, records that version as the push instead of copying.
"""

from __future__ import annotations

import hashlib
import logging
import os

from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from serving import versions

log = logging.getLogger(__name__)


def model_digest(path: str) -> str:
    """sha256 over a SavedModel's graph and variables (what decides its predictions)."""
    digest = hashlib.sha256()
    files = [os.path.join(path, "saved_model.pb")]
    variables = os.path.join(path, "variables")
    if fileio.exists(variables):
        files += sorted(os.path.join(variables, f) for f in fileio.listdir(variables))
    for name in files:
        digest.update(os.path.relpath(name, path).encode())
        with fileio.open(name, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") == "filesystem" and \
                self.CheckBlessing(input_dict):
            base = destination.filesystem.base_directory
            version = versions.newest_version(base)
            candidate = self.GetModelPath(input_dict)
            path = versions.version_dir(base, version) if version is not None else ""
            if path and model_digest(path) == model_digest(candidate):
                log.info("model already served as version %s at %s; not pushing a copy",
                         version, path)
                model_push = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                self._MarkPushed(model_push, pushed_destination=path,
                                pushed_version=str(version))
                return
        super().Do(input_dict, output_dict, exec_properties)


class Pusher(pusher_component.Pusher):
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

