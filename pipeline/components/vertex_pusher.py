"""The Vertex endpoint Pusher: TFX's, plus undeploying what no longer gets traffic.

TFX's Vertex Pusher uploads the blessed model and deploys it with its traffic share, but
leaves every earlier model deployed, each on its own machines, so the endpoint's cost
grows with each run. After a push this one undeploys the models the new traffic split left
with none; with a canary share (--serving-traffic-percent < 100) the previous model keeps
the rest and stays. Imported only for the vertex profile: the Vertex SDK is slow to import.
"""

from __future__ import annotations

import logging

from google.cloud import aiplatform
from tfx.dsl.components.base import executor_spec
from tfx.extensions.google_cloud_ai_platform import constants
from tfx.extensions.google_cloud_ai_platform.pusher import component as vertex_component
from tfx.extensions.google_cloud_ai_platform.pusher import executor as vertex_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import json_utils

from pipeline.components.pusher import approval_gate

log = logging.getLogger(__name__)


class Executor(vertex_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        if not approval_gate(self, input_dict, output_dict, exec_properties):
            return
        super().Do(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not model_push.get_int_custom_property("pushed"):
            return
        args = json_utils.loads(exec_properties["custom_config"])[constants.SERVING_ARGS_KEY]
        name = args["endpoint_name"]
        endpoints = aiplatform.Endpoint.list(filter=f'display_name="{name}"')
        if not endpoints:
            return
        endpoint = endpoints[0]
        split = endpoint.traffic_split
        for deployed in endpoint.list_models():
            if not split.get(deployed.id, 0):
                log.info("undeploying %s (%s) from %s: it has no traffic left",
                         deployed.id, deployed.display_name, name)
                endpoint.undeploy(deployed_model_id=deployed.id)


class VertexEndpointPusher(vertex_component.Pusher):
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
