"""Pusher that does not push the same model twice, and that waits for a person's approval.

A rerun with nothing new re-evaluates the (cached) model against itself, since the
resolver now returns it as the baseline, and blesses it again. TFX's Pusher would then
copy it to a new version directory, and TF Serving would load a duplicate. This Pusher
compares the candidate's files with the newest pushed version and, when they are the
same, records that version as the push instead of copying.

With `require_approval` in its custom config (`--require-approval`), a blessed model is
pushed only once a person has approved that model by its fingerprint
(control/approvals.py, read from the control folder when the step runs, on Vertex too);
until then the push is recorded as waiting, with the fingerprint, and a rejection as such.
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
from tfx.utils import json_utils, proto_utils

from control import approvals
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


AWAITING, REJECTED, APPROVED_BY = "awaiting_approval", "rejected", "approved_by"


def approval_gate(executor, input_dict, output_dict, exec_properties) -> bool:
    """True when the push may go on; otherwise records why not on the PushedModel (and the
    blessings hold: an unblessed model needs no approval)."""
    custom = json_utils.loads(exec_properties.get("custom_config") or "null") or {}
    if not custom.get("require_approval") or not executor.CheckBlessing(input_dict):
        return True
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    fingerprint = model_digest(executor.GetModelPath(input_dict))
    model_push.set_string_custom_property("fingerprint", fingerprint)
    decided = approvals.decision(custom.get("control_dir", ""), fingerprint)
    if decided is not None and decided.action == approvals.APPROVE:
        model_push.set_string_custom_property(APPROVED_BY, f"{decided.who} at {decided.time}")
        log.info("model %s approved by %s: pushing", fingerprint[:12], decided.who)
        return True
    model_push.set_int_custom_property("pushed", 0)
    if decided is not None:
        model_push.set_string_custom_property(REJECTED, f"{decided.who}: {decided.reason}")
        log.warning("model %s was rejected by %s (%s): not pushed", fingerprint[:12],
                    decided.who, decided.reason)
    else:
        model_push.set_string_custom_property(AWAITING, fingerprint)
        log.warning("model %s is blessed and waits for approval: not pushed", fingerprint[:12])
    return False


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        if not approval_gate(self, input_dict, output_dict, exec_properties):
            return
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

