"""Stopping the model with `serving.rollout pause`, through the real command, the local server
and the router on loopback: each fallback answers from the next poll on and says so; the
bandit holds its labels; `resume` undoes it; every step is in the audit log."""

import json
import time

import pytest

from control import marks, records
from serving import bandit as B
from serving import rollout
from serving.request_log import RequestLog
from serving.rollout import Rollouts
from serving.router import Router, RoutingState
from serving.server import LocalModelServer, ModelRepository
from serving.server_test import MODEL, in_process, post_json, push, wait_for

POLL = 0.2  # seconds between the servers' reads of the rollout state
LOAD = 20.0  # a version the fallback needs is loaded first (bounded wait)


@pytest.fixture
def served(tmp_path, exported_models):
    """Versions 1 and 2 pushed, 2 stable, behind the local server and a router."""
    base, config, control = tmp_path / "serving", tmp_path / "config", str(tmp_path / "control")
    push(exported_models[0], base, 1)
    push(exported_models[1], base, 2)
    Rollouts(MODEL, base, config).set_stable(2)
    server = LocalModelServer(("127.0.0.1", 0),
                              ModelRepository(MODEL, base, config, POLL, control_dir=control),
                              RequestLog(tmp_path / "requests.jsonl", 1.0, seed=0), seed=0)
    server.start_background()
    router = Router(("127.0.0.1", 0), server.url, MODEL, RoutingState(config, POLL, control),
                    seed=1)
    router.start_background()
    yield base, config, control, server, router
    router.close()
    server.close()


def command(served, *args: str) -> int:
    base, config, control, _, _ = served
    return rollout.main(["--model-base-path", str(base), "--config-dir", str(config),
                         "--control-dir", control, *args])


def predict(url: str, rows: list[dict], request_id: str = ""):
    return post_json(f"{url}/v1/models/{MODEL}:predict", {"instances": rows}, request_id)


def test_each_fallback_answers_every_path_from_the_next_poll_and_resume_undoes_it(
        served, rows, exported_models, capsys, tmp_path):
    _, _, control, server, router = served
    previous = in_process(exported_models[0], rows[:2])
    assert predict(server.url, rows[:2])[2]["X-Served-By"] == "2;stable"

    assert command(served, "pause", "--fallback", "previous", "--reason",
                   "flooded warehouse: stock shows zero", "--by", "ops-anna") == 0
    # version 1 is loaded first, then the pause takes effect
    assert wait_for(lambda: predict(server.url, rows[:1])[2]["X-Served-By"] == "1;paused",
                    seconds=LOAD)
    assert wait_for(lambda: predict(router.url, rows[:1])[2]["X-Served-By"] == "1;paused",
                    seconds=LOAD)
    for url in (server.url, router.url):
        status, body, headers = predict(url, rows[:2])
        assert status == 200 and headers["X-Paused"].startswith("previous; flooded warehouse")
        assert body["predictions"] == pytest.approx(previous.tolist(), abs=1e-6)
        # a versioned call is paused too: the model in question answers nothing
        status, _, headers = post_json(f"{url}/v1/models/{MODEL}/versions/2:predict",
                                       {"instances": rows[:1]})
        assert status == 200 and headers["X-Served-By"] == "1;paused"
    logged = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert logged[-1]["paused"] == {"fallback": "previous", "reason":
                                    "flooded warehouse: stock shows zero", "version": 1,
                                    "constant": None}
    assert command(served, "pause", "--fallback", "refuse", "--reason", "again") == 2
    assert "already paused" in capsys.readouterr().err

    assert command(served, "resume", "--reason", "stock counts fixed", "--by", "ops-anna") == 0
    assert wait_for(lambda: predict(server.url, rows[:1])[2]["X-Served-By"] == "2;stable",
                    seconds=5 * POLL)
    assert wait_for(lambda: "X-Paused" not in predict(router.url, rows[:1])[2],
                    seconds=5 * POLL)

    started = time.monotonic()  # nothing to load: from the next poll on
    assert command(served, "pause", "--fallback", "constant", "--constant", "0.28",
                   "--reason", "outage: nobody can buy") == 0
    for url in (server.url, router.url):
        assert wait_for(lambda u=url: predict(u, rows[:3])[1] == {"predictions": [0.28] * 3},
                        seconds=5 * POLL)
    honoured = time.monotonic() - started
    for url in (server.url, router.url):
        assert predict(url, rows[:1])[2]["X-Served-By"] == "constant;paused"
    bad = {**rows[0], "fare": -5}
    status, body, _ = predict(server.url, [bad])  # the contract still refuses bad rows
    assert status == 400 and "fare" in body["error"]
    command(served, "resume", "--reason", "back")

    assert command(served, "pause", "--fallback", "refuse", "--reason", "recall") == 0
    for url in (server.url, router.url):
        assert wait_for(lambda u=url: predict(u, rows[:1])[0] == 503, seconds=5 * POLL)
        status, body, headers = predict(url, rows[:1])
        assert "serving is paused (recall" in body["error"] and headers["X-Paused"] == \
            "refuse; recall"
    command(served, "resume", "--reason", "recall over")

    assert honoured < 2 * 5 * POLL
    log = records.read(control)
    assert [r.action for r in log] == ["pause", "resume", "pause", "resume", "pause", "resume"]
    assert log[0].who == "ops-anna" and log[0].reason.startswith("flooded warehouse")
    assert command(served, "status") == 0
    status_text = capsys.readouterr().out
    assert "ops-anna" in status_text and "flooded warehouse" in status_text


def test_pause_refuses_what_it_cannot_do_and_says_what_to_pass(served, capsys):
    assert command(served, "pause", "--fallback", "constant", "--reason", "x") == 2
    assert "--constant P" in capsys.readouterr().err
    assert command(served, "pause", "--fallback", "previous", "--version", "9",
                   "--reason", "x") == 2
    assert "version 9 is not pushed" in capsys.readouterr().err
    assert command(served, "pause", "--fallback", "refuse") == 2  # no reason
    assert "say why" in capsys.readouterr().err
    assert command(served, "resume", "--reason", "x") == 2
    assert "not paused" in capsys.readouterr().err


def test_the_bandit_neither_routes_nor_learns_while_paused_and_holds_its_labels(
        served, rows):
    base, config, control, server, _ = served
    Rollouts(MODEL, base, config).start_bandit([1, 2], None, reward="accuracy")
    assert wait_for(lambda: predict(server.url, rows[:1])[2]["X-Served-By"].endswith("bandit"),
                    seconds=LOAD)
    for i in range(4):
        predict(server.url, rows[:1], request_id=f"before-{i}")
    command(served, "pause", "--fallback", "previous", "--reason", "flooded warehouse")
    assert wait_for(lambda: predict(server.url, rows[:1])[2]["X-Served-By"] == "1;paused",
                    seconds=5 * POLL)
    store = B.BanditStore(config)
    routed = sum(a.requests for a in store.load().arms)
    predict(server.url, rows[:1], request_id="during-0")
    labels = {"labels": [{"key": f"before-{i}", "label": 1} for i in range(4)]}
    status, reply, _ = post_json(f"{server.url}/v1/models/{MODEL}:feedback", labels)
    assert status == 200 and reply["held"] == 4 and reply["accepted"] == 0
    assert sum(a.labels for a in store.load().arms) == 0  # nothing learned while paused
    assert sum(a.requests for a in store.load().arms) == routed  # nothing routed either
    assert command(served, "resume", "--reason", "stock counts fixed") == 0
    assert sum(a.labels for a in store.load().arms) == 4  # the held labels, applied now


def test_labels_of_requests_served_inside_a_contamination_mark_are_not_learned(served, rows):
    base, config, control, server, _ = served
    Rollouts(MODEL, base, config).start_bandit([1, 2], None, reward="accuracy")
    assert wait_for(lambda: predict(server.url, rows[:1])[2]["X-Served-By"].endswith("bandit"),
                    seconds=LOAD)
    start = int(time.time()) - 1
    for i in range(3):
        predict(server.url, rows[:1], request_id=f"flooded-{i}")
    marks.add(control, start, int(time.time()) + 1, "request time",
              "orders fell because products showed as out of stock", who="ops-anna")
    time.sleep(3 * POLL)  # the server reads the marks at its next poll
    status, reply, _ = post_json(f"{server.url}/v1/models/{MODEL}:feedback", {"labels": [
        {"key": f"flooded-{i}", "label": 0} for i in range(3)]})
    assert status == 200 and reply["contaminated"] == 3 and reply["accepted"] == 0
    assert sum(a.labels for a in B.BanditStore(config).load().arms) == 0


def test_a_mark_with_a_filter_holds_for_the_bandit_on_the_rows_it_names(served, rows):
    """A mark on cash trips only: labels of cash requests in the stretch are not learned,
    those of other requests in it are."""
    base, config, control, server, _ = served
    Rollouts(MODEL, base, config).start_bandit([1, 2], None, reward="accuracy")
    assert wait_for(lambda: predict(server.url, rows[:1])[2]["X-Served-By"].endswith("bandit"),
                    seconds=LOAD)
    cash = [r for r in rows if r.get("payment_type") == "Cash"][:2]
    card = [r for r in rows if r.get("payment_type") not in ("Cash", "", None)][:2]
    assert len(cash) == 2 and len(card) == 2
    start = int(time.time()) - 1
    for i, row in enumerate(cash + card):
        predict(server.url, [row], request_id=f"trip-{i}")
    marks.add(control, start, int(time.time()) + 1, "request time", "a broken card reader",
              where={"payment_type": "Cash"}, who="ops-anna")
    time.sleep(3 * POLL)
    status, reply, _ = post_json(f"{server.url}/v1/models/{MODEL}:feedback", {"labels": [
        {"key": f"trip-{i}", "label": 0} for i in range(4)]})
    assert status == 200 and reply["contaminated"] == 2 and reply["accepted"] == 2, reply


def test_a_router_that_has_not_polled_yet_says_the_server_s_fallback_answered(served, rows):
    """Between a pause and the router's next poll, the server already answers with its
    fallback: the router passes on what the server says, not its own routing."""
    base, config, control, server, _ = served
    slow = Router(("127.0.0.1", 0), server.url, MODEL, RoutingState(config, 3600, control),
                  seed=1)
    slow.start_background()
    try:
        assert predict(slow.url, rows[:1])[2]["X-Served-By"] == "2;stable"
        assert command(served, "pause", "--fallback", "constant", "--constant", "0.3",
                       "--reason", "outage") == 0
        assert wait_for(lambda: predict(server.url, rows[:1])[1] == {"predictions": [0.3]},
                        seconds=5 * POLL)
        status, body, headers = predict(slow.url, rows[:2])
        assert slow.state.pause is None  # it has not seen the pause itself
        assert (status, body) == (200, {"predictions": [0.3, 0.3]})
        assert headers["X-Served-By"] == "constant;paused"
        assert headers["X-Paused"].startswith("constant; outage")
    finally:
        slow.close()
