"""Every route to a write takes the same credential, a request id is answered once, and no
client can hold the server: replayed through the real `serving.server` and `serving.router`
processes, started as the README tells an operator (the server on loopback without a
credential, the router in front of it with one; serving/conftest.py)."""

import http.client
import json
import socket
import threading
import time
import uuid

import numpy as np
import tensorflow as tf

from models import features as F
from serving import bandit as B
from serving import payloads


def call(served, via: str, method: str, path: str, body=None, headers=None):
    """(status, parsed JSON answer, headers) as any HTTP client would see them."""
    connection = http.client.HTTPConnection("127.0.0.1", served.ports[via], timeout=30)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, path, data, {"Content-Type": "application/json",
                                            **(headers or {})})
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    return response.status, json.loads(raw) if raw else None, dict(response.getheaders())


def arms(served) -> dict[int, tuple[int, float]]:
    state = B.BanditStore(served.config).load()
    return {a.version: (a.labels, a.reward) for a in state.arms}


def predict_keyed(served, rows, ids, via="router"):
    model = served.model
    answered = {}
    for request_id in ids:
        status, reply, headers = call(served, via, "POST", f"/v1/models/{model}:predict",
                                      {"instances": [rows[0]]}, {"X-Request-Id": request_id})
        assert status == 200, reply
        answered[request_id] = int(headers["X-Served-By"].split(";")[0])
    return answered


def test_no_route_takes_labels_without_the_credential(served, rows):
    """The bypass: a versioned or labelled `:feedback` sent to the router without a header
    used to be forwarded to the credential-less server, which trusted it as loopback."""
    model = served.model
    ids = [f"bypass-{uuid.uuid4()}" for _ in range(40)]
    predict_keyed(served, rows, ids)
    before = arms(served)
    labels = {"labels": [{"key": k, "label": 1} for k in ids]}
    writes = [f"/v1/models/{model}/versions/1:feedback", f"/v1/models/{model}/labels/stable"
              ":feedback", f"/v1/models/{model}/versions/2%3Afeedback",
              f"/v1/models/{model}/labels/canary%3afeedback", f"/v1/models/{model}:FEEDBACK",
              f"/v1/models/{model}:feedback", f"/v1/models/{model}:feedback?x=1",
              "/v1/models/other:feedback", f"//v1/models/{model}:feedback"]
    for path in writes:
        status, reply, _ = call(served, "router", "POST", path, labels)
        assert status in (401, 403, 404), (path, status, reply)
        assert reply["error"], path
    # Straight to the server: only the one write path exists, versioned ones are refused.
    for path in writes[:4]:
        status, reply, _ = call(served, "server", "POST", path, labels)
        assert status == 404 and f"/v1/models/{model}:feedback" in reply["error"], (path, reply)
    # A proxy on the same machine makes every caller loopback: a forwarded write is refused.
    for header in ("X-Forwarded-For", "Forwarded", "Via"):
        status, reply, _ = call(served, "server", "POST", f"/v1/models/{model}:feedback",
                                labels, {header: "198.51.100.7"})
        assert status == 403 and header in reply["error"], reply
    assert arms(served) == before
    # The same labels with the credential, by the one path, do move the bandit.
    status, reply, _ = call(served, "router", "POST", f"/v1/models/{model}:feedback", labels,
                            {"Authorization": f"Bearer {served.secret}"})
    assert status == 200 and reply["accepted"] == 40, reply
    assert sum(n for n, _ in arms(served).values()) == sum(n for n, _ in before.values()) + 40


def test_a_request_id_is_answered_once_and_labelled_once(served, rows):
    """The takeover: re-sending another client's id until the preferred version answers used
    to move the ledger's record, so the true label credited the caller's choice."""
    model = served.model
    victims = [f"victim-{uuid.uuid4()}" for _ in range(20)]
    first = predict_keyed(served, rows, victims)
    ledger = B.BanditStore(served.config)._ledger()
    assert {k: ledger[k]["version"] for k in victims} == first
    for via in ("router", "server"):
        for request_id in victims:
            for _ in range(3):
                status, reply, _ = call(served, via, "POST", f"/v1/models/{model}:predict",
                                        {"instances": [rows[0]]}, {"X-Request-Id": request_id})
                assert status == 409 and "already answered" in reply["error"], reply
    assert {k: r["version"] for k, r in B.BanditStore(served.config)._ledger().items()
            if k in victims} == first
    before = arms(served)
    truth = {"labels": [{"key": k, "label": 1} for k in victims]}
    auth = {"Authorization": f"Bearer {served.secret}"}
    status, reply, _ = call(served, "router", "POST", f"/v1/models/{model}:feedback", truth, auth)
    assert status == 200 and reply["accepted"] == 20
    after = arms(served)
    credited = {v: after[v][0] - before[v][0] for v in after}
    assert credited == {v: sum(1 for k in victims if first[k] == v) for v in after}
    status, reply, _ = call(served, "router", "POST", f"/v1/models/{model}:feedback", truth, auth)
    assert status == 200 and reply["accepted"] == 0 and reply["duplicates"] == 20
    # An id the ledger can key on: printable, no spaces, bounded.
    for bad in ("two words", "x" * 129):
        status, reply, _ = call(served, "server", "POST", f"/v1/models/{model}:predict",
                                {"instances": [rows[0]]}, {"X-Request-Id": bad})
        assert status == 400 and "X-Request-Id" in reply["error"]


def _example_without(row: dict, left_out: str) -> bytes:
    instance = payloads.encode_row(row)
    feature = {}
    for f in F.SERVING_FEATURES:
        value = instance[f.name]
        if f.dtype == "string":
            if value:
                feature[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[value.encode()]))
        elif not np.isnan(value):
            feature[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(
                value=[int(value)])) if f.dtype == "int" else \
                tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    feature.pop(left_out, None)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_hostile_requests_get_a_json_4xx_naming_the_cause(served, rows):
    import base64

    model = served.model
    for via in ("server", "router"):
        deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        status, reply, _ = call(served, via, "POST", f"/v1/models/{model}:predict", deep)
        assert status == 400 and "nested 100,00" in reply["error"], reply
        status, reply, _ = call(served, via, "GET", f"/v1/models/{model}",
                                headers={"Authorization": "Bearer " + "x" * 70_000})
        assert status == 431 and "Line too long" in reply["error"], reply
        for method in ("PUT", "DELETE"):
            status, reply, _ = call(served, via, method, f"/v1/models/{model}")
            assert status == 405 and "GET" in reply["error"], reply
    # A tf.Example without a column the raw signature does not ask for: refused naming it.
    serving_spec = F.raw_feature_spec("SERVING")
    unused = sorted(n for n, spec in serving_spec.items()
                    if isinstance(spec, tf.io.FixedLenFeature) and spec.default_value is None
                    and n not in {f.name for f in F.SERVING_FEATURES})
    assert unused, "every column the examples signature requires is a raw input"
    example = _example_without(rows[0], "")
    body = {"signature_name": "serving_examples",
            "instances": [{"examples": {"b64": base64.b64encode(example).decode()}}]}
    status, reply, _ = call(served, "server", "POST", f"/v1/models/{model}/versions/1:predict",
                            body)
    assert status == 400 and f"no feature {unused[0]!r}" in reply["error"], reply
    assert "Graph execution error" not in reply["error"]


def test_slow_clients_hold_no_thread_and_others_are_served(served, rows):
    """A slow loris (bounded, loopback) is cut at --request-timeout with a 408 while other
    clients are answered at their usual pace; past --max-connections a client gets 503 with
    Retry-After; the server serves on afterwards."""
    model, port = served.model, served.ports["server"]
    predict = json.dumps({"instances": [rows[0]]}).encode()

    def latency() -> float:
        started = time.monotonic()
        status, _, _ = call(served, "server", "POST", f"/v1/models/{model}/versions/1:predict",
                            predict)
        assert status == 200
        return time.monotonic() - started

    usual = float(np.median([latency() for _ in range(10)]))
    answers: dict[int, bytes] = {}
    cut_after: list[float] = []

    def slow_loris(n: int) -> None:
        """Odd ones send the request line at once and then trickle headers and body (408);
        even ones trickle the request line itself (closed without a word, as an idle one)."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            line = f"POST /v1/models/{model}:predict HTTP/1.1\r\n".encode()
            rest = (f"Host: x\r\nContent-Length: {len(predict)}\r\n\r\n").encode() + predict
            try:
                if n % 2:
                    sock.sendall(line)
                for byte in (rest if n % 2 else line)[:40]:  # a byte every 0.25 s: 10 s
                    sock.sendall(bytes([byte]))
                    time.sleep(0.25)
            except OSError:
                pass  # closed on it: what we are testing
            answers[n] = sock.makefile("rb").read()
        cut_after.append(time.monotonic() - started)

    lorises = [threading.Thread(target=slow_loris, args=(n,)) for n in range(10)]
    for t in lorises:
        t.start()
    time.sleep(1.0)
    during = [latency() for _ in range(20)]
    for t in lorises:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in lorises)
    assert max(during) < max(1.0, 5 * usual), (usual, during)
    assert sorted(answers) == list(range(10))
    assert all(answers[n].startswith(b"HTTP/1.1 408") for n in range(1, 10, 2)), answers
    assert all(answers[n] == b"" for n in range(0, 10, 2)), answers
    assert b"--request-timeout" in answers[1]
    assert max(cut_after) < 3 + 2.0, cut_after  # --request-timeout 3, watched every 0.25 s

    # Past --max-connections (24): idle connections fill it, the next one is turned away.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(24)]
    try:
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            extra.sendall(f"GET /v1/models/{model} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            turned_away = extra.makefile("rb").read().decode()
        assert turned_away.startswith("HTTP/1.1 503") and "Retry-After: 1" in turned_away
        assert "--max-connections" in turned_away
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)
    assert latency() < max(1.0, 5 * usual) and served.alive()
