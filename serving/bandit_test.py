"""The outcome bandit: its arithmetic, its files, and the real server routing by it, fed
labels over HTTP as any client would send them, restarted, and promoted."""

import json

import pytest

from serving import bandit as B
from serving import model_config
from serving.model_config import RolloutError
from serving.request_log import RequestLog
from serving.rollout import Rollouts
from serving.server import LocalModelServer, ModelRepository
from serving.server_test import MODEL, post_json, push


def test_traffic_follows_the_evidence_and_never_drops_below_the_floor():
    state = B.Bandit([B.Arm(1), B.Arm(2)], floor=0.05)
    assert state.weights == pytest.approx({1: 0.5, 2: 0.5}, abs=0.02)  # nothing known yet
    state.arm(1).labels, state.arm(1).reward = 200, 120.0  # 60% reward
    state.arm(2).labels, state.arm(2).reward = 200, 160.0  # 80%
    state.update_weights()
    assert state.p_best[2] > 0.999 and state.weights[1] == pytest.approx(0.05, abs=1e-3)
    assert sum(state.weights.values()) == pytest.approx(1.0)
    assert state.decision() == (2, "version 2 is best with P(best) 1.000")
    close = B.Bandit([B.Arm(1, labels=200, reward=120.0), B.Arm(2, labels=200, reward=124.0)])
    assert close.decision()[0] is None and "below the threshold" in close.decision()[1]
    few = B.Bandit([B.Arm(1, labels=5, reward=0.0), B.Arm(2, labels=5, reward=5.0)])
    assert few.decision() == (None, "version 1 has 5 of 100 labels, version 2 has 5 of 100 "
                                    "labels")
    assert B.choose({1: 0.25, 2: 0.75}, [1, 2], 0.2) == 1
    assert B.choose({1: 0.25, 2: 0.75}, [1, 2], 0.3) == 2
    assert B.choose({1: 0.25, 2: 0.75}, [2], 0.1) == 2  # only what is loaded
    for bad, match in (({"floor": 0.5}, "leaves no traffic"), ({"reward": "auc"}, "--reward"),
                       ({"threshold": 1.0}, "--threshold")):
        with pytest.raises(RolloutError, match=match):
            B.Bandit([B.Arm(1), B.Arm(2)], **bad)


def test_labels_apply_once_unknown_keys_are_kept_and_the_state_survives_a_restart(tmp_path):
    store = B.BanditStore(tmp_path)
    store.start(B.Bandit([B.Arm(1), B.Arm(2)], reward="accuracy"))
    store.routed(1, [("a", 0.9), ("b", 0.2)], rows=2)
    store.routed(2, [("c", 0.7)], rows=1)
    store.routed(2, [], rows=3)  # unkeyed rows count as requests, never as labels
    result, state = store.feedback([("a", 1), ("b", 1), ("c", 1), ("zz", 0)])
    assert (result.accepted, result.unknown, result.duplicates) == (3, ["zz"], 0)
    assert (state.arm(1).requests, state.arm(1).labels, state.arm(1).reward) == (2, 2, 1.0)
    assert (state.arm(2).requests, state.arm(2).labels, state.arm(2).reward) == (4, 1, 1.0)
    again, _ = store.feedback([("a", 0)])  # a second label for the same request
    assert again.duplicates == 1 and again.accepted == 0
    unmatched = [json.loads(line) for line in (tmp_path / B.UNMATCHED_FILE).open()]
    assert [(u["key"], u["label"]) for u in unmatched] == [("zz", 0)]
    restarted = B.BanditStore(tmp_path).load()  # a new process reads the same figures
    assert restarted.arm(1).reward == 1.0 and restarted.weights == state.weights
    assert B.BanditStore(tmp_path).feedback([("a", 1)])[0].duplicates == 1


def test_bad_feedback_is_refused_whole_with_the_reason(tmp_path):
    store = B.BanditStore(tmp_path)
    with pytest.raises(RolloutError, match="no bandit is running"):
        store.feedback([("a", 1)])
    for body, match in (({"labels": []}, "feedback must be"), ([1], "feedback must be"),
                        ({"labels": [{"key": "a"}]}, r"labels\[0\]: needs"),
                        ({"labels": [{"key": "a", "label": 1}, {"key": "b", "label": "maybe"}]},
                         r"labels\[1\]: label 'maybe' is not 0/1")):
        with pytest.raises(RolloutError, match=match):
            B.labels_from_json(body)
    (tmp_path / "l.csv").write_text("request,label\nr1,1\n")
    with pytest.raises(RolloutError, match=r"no column\(s\) \['key'\]"):
        B.labels_from_file(tmp_path / "l.csv")
    assert B.labels_from_file(tmp_path / "l.csv", key="request") == [("r1", 1)]
    (tmp_path / "l.jsonl").write_text('{"key": "r1", "label": true}\n{"key": "r2", "lab\n')
    with pytest.raises(RolloutError, match=r"l.jsonl:2: not JSON"):
        B.labels_from_file(tmp_path / "l.jsonl")
    with pytest.raises(RolloutError, match="no labels file"):
        B.labels_from_file(tmp_path / "none.csv")


def _start(base, config):
    server = LocalModelServer(("127.0.0.1", 0), ModelRepository(MODEL, base, config, 0.2),
                              RequestLog(None, 0.0), seed=0)
    server.start_background()
    return server


def test_the_server_moves_traffic_to_the_version_whose_labels_agree_and_promotes_it(
        tmp_path, exported_models, rows):
    base, config = tmp_path / "serving", tmp_path / "config"
    push(exported_models[0], base, 1)
    push(exported_models[1], base, 2)
    rollouts = Rollouts(MODEL, base, config)
    rollouts.set_stable(1)
    rollouts.start_bandit([1, 2], None, reward="accuracy", min_labels=10)
    server = _start(base, config)
    served: dict[int, int] = {1: 0, 2: 0}
    try:
        url = f"{server.url}/v1/models/{MODEL}"
        last_round = {}
        for round_ in range(8):  # bounded: 8 rounds of 20 requests, labels after each
            labels, last_round = [], {1: 0, 2: 0}
            for i in range(20):
                key = f"r{round_}-{i}"
                status, body, headers = post_json(f"{url}:predict",
                                              {"instances": [rows[(round_ * 20 + i) % 64]]}, key)
                assert status == 200, body  # no request fails while traffic shifts
                version, route = headers["X-Served-By"].split(";")
                assert route == "bandit"
                served[int(version)] += 1
                last_round[int(version)] += 1
                said = body["predictions"][0] >= 0.5
                # Outcomes that always agree with version 2 and never with version 1.
                labels.append({"key": key, "label": int(said if version == "2" else not said)})
            status, fed, _ = post_json(f"{url}:feedback", {"labels": labels})
            assert status == 200 and fed["accepted"] == 20, fed
        state = B.BanditStore(config).load()
        assert state.weights[2] >= 0.8 and last_round[2] >= 14, (state.weights, last_round)
        assert served[1] + served[2] == 160 and served[1] >= 8  # the floor kept 1 in play
        # Bad feedback changes nothing: a malformed body, an unknown key.
        assert post_json(f"{url}:feedback", {"labels": [{"key": "x", "label": 7}]})[0] == 400
        status, fed, _ = post_json(f"{url}:feedback",
                                   {"labels": [{"key": "never-sent", "label": 1}]})
        assert status == 200 and fed["unknown_keys"] == ["never-sent"]
        assert B.BanditStore(config).load().weights == state.weights
    finally:
        server.close()
    restarted = _start(base, config)  # the weights are read back, not relearnt
    try:
        assert restarted.repository.snapshot.bandit == state.weights
        assert "P(best)" in rollouts.describe() and "traffic" in rollouts.describe()
        promoted = rollouts.promote()
        assert promoted.stable == 2 and promoted.bandit == []
        assert not (config / B.STATE_FILE).exists() and list(config.glob("bandit-*.json"))
        restarted.repository.refresh()
        status, _, headers = post_json(f"{restarted.url}/v1/models/{MODEL}:predict",
                                   {"instances": [rows[0]]}, "after")
        assert status == 200 and headers["X-Served-By"] == "2;stable"
    finally:
        restarted.close()


def test_the_command_line_starts_feeds_and_shows_a_bandit(tmp_path, exported_models, capsys):
    from serving import rollout

    base, config = tmp_path / "serving", tmp_path / "config"
    push(exported_models[0], base, 1)
    push(exported_models[1], base, 2)
    where = ["--model-name", MODEL, "--model-base-path", str(base), "--config-dir", str(config)]
    assert rollout.main([*where, "bandit", "--versions", "1", "3"]) == 2
    assert "version 3 is not under" in capsys.readouterr().err
    assert rollout.main([*where, "bandit", "--newest", "2", "--floor", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "floor 10%" in out and "version 1" in out and "version 2" in out
    B.BanditStore(config).routed(2, [("trip-7", 0.8)], rows=1)
    (tmp_path / "labels.csv").write_text("key,label\ntrip-7,1\ntrip-8,0\n")
    assert rollout.main([*where, "feedback", str(tmp_path / "labels.csv")]) == 0
    assert "1 labels applied, 0 held while paused, 0 inside a contamination mark (not " \
        "learned), 0 already labelled, 1 for keys the bandit never routed" in \
        capsys.readouterr().out
    (tmp_path / "bad.csv").write_text("key,label\ntrip-9,2\n")
    assert rollout.main([*where, "feedback", str(tmp_path / "bad.csv")]) == 2
    assert "bad.csv:2: label '2' is not 0/1" in capsys.readouterr().err
    assert rollout.main([*where, "promote"]) == 2
    assert "has not decided: version 1 has 0 of 100 labels" in capsys.readouterr().err
    assert rollout.main([*where, "rollback"]) == 0  # ends the bandit; stable serves all
    assert "P(best)" not in capsys.readouterr().out  # no arms shown any more
    assert model_config.load_state(config).bandit == []


def test_whole_percentages_keep_the_floor_and_add_up_to_100():
    assert B.percentages({1: 0.05, 2: 0.95}) == {1: 5, 2: 95}
    assert B.percentages({1: 0.004, 2: 0.996}) == {1: 1, 2: 99}  # never rounded to nothing
    assert sum(B.percentages({1: 1 / 3, 2: 1 / 3, 3: 1 / 3}).values()) == 100
    assert B.percentages({1: 0.0, 2: 1.0}) == {1: 0, 2: 100}


def test_resume_under_concurrent_feedback_loses_no_label(tmp_path):
    """Labels posted while serving is paused are held and applied at resume. A server whose
    view of the pause is a poll old keeps posting "held" labels after `resume` took the held
    ones: they must be applied, not left in a held file nobody reads until the next resume."""
    import threading
    import time

    base, config = tmp_path / "serving", tmp_path / "config"
    for version in (1, 2):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"")
    rollouts = Rollouts(MODEL, base, config, reason="labels in flight")
    rollouts.start_bandit([1, 2], None, reward="accuracy", floor=0.05)
    store = B.BanditStore(config)
    keys = [f"k{i}" for i in range(200)]
    store.routed(1, [(k, 0.9) for k in keys[:100]], rows=100)
    store.routed(2, [(k, 0.2) for k in keys[100:]], rows=100)
    rollouts.pause("constant", constant=0.3)
    started = threading.Event()

    def labeller(part: list[str]) -> None:
        started.wait(10)
        for start in range(0, len(part), 5):  # posted as the stale server would: "paused"
            store.feedback([(k, 1) for k in part[start:start + 5]], paused=True)
            time.sleep(0.02)  # 0.2 s in all: resume comes half-way

    threads = [threading.Thread(target=labeller, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    started.set()
    time.sleep(0.1)
    rollouts.resume()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    applied = sum(a.labels for a in store.load().arms)
    held = config / B.HELD_FILE
    left = held.read_text().splitlines() if held.is_file() else []
    assert applied == 200 and left == [], (applied, len(left))


def test_feedback_from_a_file_takes_the_path_feedback_over_http_takes(tmp_path):
    """`serving.rollout feedback FILE` (labels on Vertex) is held while paused and recorded
    in the audit log under who ran it, as `:feedback` is."""
    from control import records

    base, config, control = tmp_path / "serving", tmp_path / "config", str(tmp_path / "control")
    for version in (1, 2):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"")
    rollouts = Rollouts(MODEL, base, config, control_dir=control, who="alice",
                        reason="labels from the warehouse")
    rollouts.start_bandit([1, 2], None, reward="accuracy", floor=0.05)
    B.BanditStore(config).routed(1, [(f"k{i}", 0.9) for i in range(10)], rows=10)
    rollouts.pause("constant", constant=0.3)
    result = rollouts.feedback([(f"k{i}", 1) for i in range(10)])
    assert result.held == 10 and result.accepted == 0
    assert sum(a.labels for a in B.BanditStore(config).load().arms) == 0
    _, released = rollouts.resume()
    assert released.accepted == 10
    (record,) = records.read(control, ("feedback",))
    assert record.who == "alice" and record.details["held"] == 10
    assert record.details["via"] == "serving.rollout feedback"
