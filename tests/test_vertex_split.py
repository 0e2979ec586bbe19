"""The bandit's weights as a Vertex endpoint's traffic split, through the offline Vertex
endpoint that the offline pipeline run deploys to (pipeline/orchestration/vertex_boundary.py):
Vertex's upload, deploy and UpdateEndpoint checks, kept in a file."""

from serving import bandit as B
from serving.rollout import Rollouts
from serving.server_test import MODEL, push


def test_the_bandits_weights_become_a_vertex_endpoints_traffic_split(
        tmp_path, exported_models, monkeypatch, capsys):
    from google.cloud import aiplatform

    from pipeline.orchestration import vertex_boundary as V
    from serving import rollout

    monkeypatch.setenv(V.ROOT_ENV, str(tmp_path / "vertex"))
    monkeypatch.setattr(aiplatform, "Endpoint", V.OfflineEndpoint)
    endpoint = V.OfflineEndpoint.create("taxi-endpoint")
    image = "europe-docker.pkg.dev/acme/taxi/serving:1"  # a custom serving image
    for name, model, share in (("old", exported_models[0], 100), ("v3", exported_models[0], 0),
                               ("v4", exported_models[1], 0)):
        V.OfflineModel.upload(name, model, image).deploy(endpoint, traffic_percentage=share,
                                                         deployed_model_display_name=name)
    ids = {m.display_name: m.id for m in endpoint.list_models()}
    base, config = tmp_path / "serving", tmp_path / "config"
    push(exported_models[0], base, 3)
    push(exported_models[1], base, 4)
    Rollouts(MODEL, base, config).start_bandit([3, 4], None, reward="accuracy")
    store = B.BanditStore(config)
    store.routed(3, [(f"a{i}", 0.9) for i in range(30)], rows=30)
    store.routed(4, [(f"b{i}", 0.9) for i in range(30)], rows=30)
    store.feedback([(f"a{i}", int(i < 12)) for i in range(30)]
                   + [(f"b{i}", int(i < 27)) for i in range(30)])  # version 4 is right more
    common = ["--model-name", MODEL, "--model-base-path", str(base), "--config-dir", str(config),
              "vertex-split", "--endpoint", "taxi-endpoint"]
    arms = ["--arm", f"3={ids['v3']}", "--arm", f"4={ids['v4']}"]
    assert rollout.main([*common, *arms]) == 0
    split = V.OfflineEndpoint(endpoint.name).traffic_split
    weights = store.load().weights
    assert split == {ids["v3"]: round(100 * weights[3]), ids["v4"]: round(100 * weights[4])}
    assert split[ids["v4"]] >= 90 and split[ids["v3"]] >= 5  # the floor, on Vertex too
    assert f"set traffic split of taxi-endpoint: {ids['v3']}: " in capsys.readouterr().out
    for bad, message in ((["--arm", f"3={ids['v3']}"], "bandit version(s) [4] have no --arm"),
                         ([*arms[:2], "--arm", "4=999"], "['4=999'] not deployed"),
                         (["--arm", "three=1"], "write VERSION=DEPLOYED_MODEL_ID")):
        assert rollout.main([*common, *bad]) == 2
        assert message in capsys.readouterr().err
    assert V.OfflineEndpoint(endpoint.name).traffic_split == split  # nothing changed
    assert rollout.main([*common[:-1], "nowhere", *arms]) == 2
    assert "no Vertex endpoint named 'nowhere'" in capsys.readouterr().err


def test_pause_moves_a_vertex_endpoints_traffic_to_the_previous_model_and_resume_restores(
        tmp_path, exported_models, monkeypatch, capsys):
    """Through the offline Vertex endpoint: Vertex answers only with a deployed model, so the
    fallback is the previous model's deployment; the split before the pause comes back."""
    from control import records
    from pipeline.orchestration import vertex_boundary as V
    from serving import rollout

    endpoint, ids, base = _two_deployments(tmp_path, monkeypatch, exported_models)
    config, control = tmp_path / "config", tmp_path / "control"
    common = ["--model-name", MODEL, "--model-base-path", str(base), "--config-dir", str(config),
              "--control-dir", str(control)]
    before = dict(V.OfflineEndpoint(endpoint.name).traffic_split)
    assert rollout.main([*common, "pause", "--fallback", "refuse", "--reason", "x",
                         "--vertex-endpoint", "taxi-endpoint"]) == 2
    assert "answers only with a deployed model" in capsys.readouterr().err
    assert rollout.main([*common, "pause", "--fallback", "previous", "--reason",
                         "flooded warehouse", "--vertex-endpoint", "taxi-endpoint",
                         "--deployed-id", ids["v3"]]) == 0
    assert V.OfflineEndpoint(endpoint.name).traffic_split == {ids["v3"]: 100}
    assert rollout.main([*common, "resume", "--reason", "stock counts fixed"]) == 0
    assert V.OfflineEndpoint(endpoint.name).traffic_split == before
    assert [r.action for r in records.read(str(control))] == ["pause", "resume"]


def test_a_refused_pause_moves_no_traffic_and_a_failed_restore_keeps_the_pause(
        tmp_path, exported_models, monkeypatch, capsys):
    """Validate first, move traffic second; restore before clearing: a pause that cannot be
    made leaves the endpoint as it was, and a resume whose restore fails leaves the pause
    (and the split to restore) recorded, so nothing is lost."""
    from pipeline.orchestration import vertex_boundary as V
    from serving import model_config, rollout

    endpoint, ids, base = _two_deployments(tmp_path, monkeypatch, exported_models)
    config = tmp_path / "config"
    common = ["--model-name", MODEL, "--model-base-path", str(base), "--config-dir",
              str(config), "--control-dir", str(tmp_path / "control")]
    before = dict(V.OfflineEndpoint(endpoint.name).traffic_split)
    assert rollout.main([*common, "pause", "--fallback", "previous", "--version", "99",
                         "--reason", "x", "--vertex-endpoint", "taxi-endpoint",
                         "--deployed-id", ids["v3"]]) == 2
    assert "version 99 is not pushed" in capsys.readouterr().err
    assert V.OfflineEndpoint(endpoint.name).traffic_split == before
    assert not model_config.load_state(config).pause
    assert rollout.main([*common, "pause", "--fallback", "previous", "--reason", "flooded",
                         "--vertex-endpoint", "taxi-endpoint", "--deployed-id", ids["v3"]]) == 0
    monkeypatch.setattr(rollout.vertex_split, "restore", _unreachable)
    assert rollout.main([*common, "resume", "--reason", "fixed"]) == 2
    kept = model_config.load_state(config).pause
    assert kept and kept["vertex"]["split"] == before
    assert V.OfflineEndpoint(endpoint.name).traffic_split == {ids["v3"]: 100}


def _unreachable(endpoint, split):
    from serving.model_config import RolloutError

    raise RolloutError(f"{endpoint}: the endpoint could not be reached")


def _two_deployments(tmp_path, monkeypatch, exported_models):
    """The offline Vertex endpoint with versions 3 (20%) and 4 (80%) deployed, and both
    pushed: (endpoint, deployed ids by name, serving base)."""
    from google.cloud import aiplatform

    from pipeline.orchestration import vertex_boundary as V

    monkeypatch.setenv(V.ROOT_ENV, str(tmp_path / "vertex"))
    monkeypatch.setattr(aiplatform, "Endpoint", V.OfflineEndpoint)
    endpoint = V.OfflineEndpoint.create("taxi-endpoint")
    image = "europe-docker.pkg.dev/acme/taxi/serving:1"
    for name, model, share in (("v3", exported_models[0], 20), ("v4", exported_models[1], 80)):
        V.OfflineModel.upload(name, model, image).deploy(endpoint, traffic_percentage=share,
                                                         deployed_model_display_name=name)
    ids = {m.display_name: m.id for m in endpoint.list_models()}
    base = tmp_path / "serving"
    push(exported_models[0], base, 3)
    push(exported_models[1], base, 4)
    return endpoint, ids, base
