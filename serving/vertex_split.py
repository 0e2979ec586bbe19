"""The bandit's traffic weights applied as a Vertex AI endpoint's traffic split.

A Vertex endpoint routes requests itself, by whole percentages over its deployed model ids,
so on Vertex the bandit does not route: its weights (serving.rollout, fed with labels as
anywhere) are written to the endpoint. Which deployed model is which bandit version is
said explicitly (`--arm VERSION=DEPLOYED_MODEL_ID`, ids from `gcloud ai endpoints describe`):
nothing on Vertex carries the Pusher's version numbers. Deployed models that are not arms
get no traffic, as Vertex does with ids left out of a split; they stay deployed.
"""

from __future__ import annotations

import logging

from serving import bandit as B
from serving.model_config import RolloutError

log = logging.getLogger(__name__)


def parse_arms(pairs: list[str]) -> dict[int, str]:
    arms: dict[int, str] = {}
    for pair in pairs:
        version, sep, deployed = pair.partition("=")
        if not sep or not version.strip().isdigit() or not deployed.strip():
            raise RolloutError(f"--arm {pair!r}: write VERSION=DEPLOYED_MODEL_ID, e.g. 3=1234567")
        arms[int(version)] = deployed.strip()
    return arms


def _endpoint(endpoint_name: str):
    from google.cloud import aiplatform

    endpoints = aiplatform.Endpoint.list(filter=f'display_name="{endpoint_name}"')
    if not endpoints:
        raise RolloutError(f"no Vertex endpoint named {endpoint_name!r} in this project/region")
    return endpoints[0]


def take_all(endpoint_name: str, deployed_id: str) -> dict[str, int]:
    """All of the endpoint's traffic to one deployed model (a pause); returns the split it
    had, for `restore`."""
    endpoint = _endpoint(endpoint_name)
    deployed = {m.id for m in endpoint.list_models()}
    if deployed_id not in deployed:
        raise RolloutError(f"{deployed_id!r} is not deployed on {endpoint_name!r}; deployed "
                           f"model ids: {sorted(deployed)}")
    before = dict(endpoint.traffic_split)
    endpoint.update(traffic_split={deployed_id: 100})
    log.warning("endpoint %s: all traffic to %s (was %s)", endpoint_name, deployed_id, before)
    return before


def restore(endpoint_name: str, split: dict[str, int]) -> None:
    """The split an endpoint had before a pause, for the models still deployed."""
    endpoint = _endpoint(endpoint_name)
    deployed = {m.id for m in endpoint.list_models()}
    kept = {k: v for k, v in split.items() if k in deployed and v}
    if sum(kept.values()) != 100:
        raise RolloutError(f"the split before the pause {split} no longer adds up on "
                           f"{endpoint_name!r} (deployed: {sorted(deployed)}): set it with "
                           "vertex-split or gcloud")
    endpoint.update(traffic_split=kept)


def apply(endpoint_name: str, arms: dict[int, str], weights: dict[int, float],
          dry_run: bool = False) -> dict[str, int]:
    """Writes the weights as the endpoint's traffic split; returns the split."""
    from google.cloud import aiplatform

    unmapped = sorted(set(weights) - set(arms))
    if unmapped:
        raise RolloutError(f"bandit version(s) {unmapped} have no --arm VERSION=DEPLOYED_MODEL_ID")
    endpoints = aiplatform.Endpoint.list(filter=f'display_name="{endpoint_name}"')
    if not endpoints:
        raise RolloutError(f"no Vertex endpoint named {endpoint_name!r} in this project/region")
    endpoint = endpoints[0]
    deployed = {m.id for m in endpoint.list_models()}
    absent = [f"{v}={arms[v]}" for v in sorted(weights) if arms[v] not in deployed]
    if absent:
        raise RolloutError(f"{absent} not deployed on {endpoint_name!r}; deployed model ids: "
                           f"{sorted(deployed)}")
    split = {arms[v]: share for v, share in B.percentages(weights).items()}
    if not dry_run:
        endpoint.update(traffic_split=split)
        log.info("endpoint %s: traffic split %s", endpoint_name, split)
    left_out = sorted(deployed - set(split))
    if left_out:
        log.info("deployed models %s are not arms: no traffic", left_out)
    return split
