"""The router in front of a TF-Serving-compatible server (the local one, which answers TF
Serving's REST API): splitting, passing through, the bandit, and an absent upstream."""

import pytest

from serving import bandit as B
from serving.request_log import RequestLog
from serving.rollout import Rollouts
from serving.router import Router, RoutingState
from serving.server import LocalModelServer, ModelRepository
from serving.server_test import MODEL, in_process, post_json, push, wait_for


@pytest.fixture
def served(tmp_path, exported_models):
    """Versions 1 and 2 loaded upstream (as models.config makes TF Serving load them), and a
    router in front reading the same config dir."""
    base, config = tmp_path / "serving", tmp_path / "config"
    push(exported_models[0], base, 1)
    push(exported_models[1], base, 2)
    rollouts = Rollouts(MODEL, base, config)
    rollouts.set_stable(1)
    rollouts.canary(2, 0.3)
    upstream = LocalModelServer(("127.0.0.1", 0), ModelRepository(MODEL, base, config, 0.2),
                                RequestLog(None, 0.0), seed=0)
    upstream.start_background()
    router = Router(("127.0.0.1", 0), upstream.url, MODEL, RoutingState(config, 0.1), seed=1)
    router.start_background()
    yield rollouts, upstream, router, config
    router.close()
    upstream.close()


def test_the_router_splits_unversioned_traffic_and_passes_the_rest_through(
        served, rows, exported_models):
    rollouts, upstream, router, _ = served
    expected = {v: in_process(exported_models[v - 1], rows[:1])[0] for v in (1, 2)}
    counts = {1: 0, 2: 0}
    for _ in range(200):  # bounded
        status, body, headers = post_json(f"{router.url}/v1/models/{MODEL}:predict",
                                          {"instances": rows[:1]})
        assert status == 200, body
        version, route = headers["X-Served-By"].split(";")
        assert route == {"1": "stable", "2": "canary"}[version]
        counts[int(version)] += 1
        # The answer is the chosen version's: the router asked TF Serving for it by number.
        assert body["predictions"][0] == pytest.approx(expected[int(version)], rel=1e-6)
    assert 0.2 <= counts[2] / 200 <= 0.4, counts
    status, body, headers = post_json(f"{router.url}/v1/models/{MODEL}/versions/2:predict",
                                      {"instances": rows[:2]})
    assert status == 200 and headers["X-Served-By"] == "2;version:2"  # upstream's own header
    status, body, _ = post_json(f"{router.url}/v1/models/{MODEL}:predict",
                                {"instances": [{"fare": "twelve"}]})
    assert status == 400 and "instance 0" in body["error"]  # TF Serving's error, unchanged
    rollouts.promote()  # the canary becomes stable; the router reads it on its next poll
    assert wait_for(lambda: router.state.snapshot.labels.get("stable") == 2)
    _, _, headers = post_json(f"{router.url}/v1/models/{MODEL}:predict", {"instances": rows[:1]})
    assert headers["X-Served-By"] == "2;stable"


def test_the_bandit_learns_through_the_router_and_a_missing_upstream_is_a_502(
        served, rows):
    rollouts, upstream, router, config = served
    rollouts.start_bandit([1, 2], None, reward="accuracy", min_labels=10)
    assert wait_for(lambda: router.state.snapshot.bandit)  # read on the router's next poll
    url = f"{router.url}/v1/models/{MODEL}"
    for round_ in range(6):  # bounded: 6 rounds of 20 keyed requests, labels after each
        labels = []
        for i in range(20):
            key = f"r{round_}-{i}"
            status, body, headers = post_json(f"{url}:predict",
                                              {"instances": [rows[(round_ * 20 + i) % 64]]}, key)
            assert status == 200, body
            version, route = headers["X-Served-By"].split(";")
            assert route == "bandit"
            said = body["predictions"][0] >= 0.5
            labels.append({"key": key, "label": int(said if version == "2" else not said)})
        status, fed, _ = post_json(f"{url}:feedback", {"labels": labels})
        assert status == 200 and fed["accepted"] == 20, fed
    state = B.BanditStore(config).load()
    assert sum(a.requests for a in state.arms) == 120 and state.weights[2] >= 0.8, state
    assert post_json(f"{url}:feedback", {"labels": [{"key": "r0-0", "label": 5}]})[0] == 400
    upstream.close()
    status, body, _ = post_json(f"{url}:predict", {"instances": rows[:1]})
    assert status == 502 and f"TF Serving at {upstream.url} did not answer" in body["error"]
    assert sum(a.requests for a in B.BanditStore(config).load().arms) == 120  # not counted
