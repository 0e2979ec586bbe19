"""The local TF-Serving-compatible server on loopback, serving real exported SavedModels.

Every load loop is bounded in requests and in seconds.
"""

import itertools
import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import features as F
from models import model as M
from serving import model_config, payloads
from serving.client import ServingClient, ServingError
from serving.request_log import RequestLog
from serving.rollout import Rollouts
from serving.server import LocalModelServer, ModelRepository

MODEL = "taxi-big-tipper"


def in_process(model_dir, rows):
    model = tf.saved_model.load(model_dir)
    return model.signatures["serving_default"](**M.raw_inputs(rows))[M.PROBABILITY].numpy()


def post_json(url, body, request_id=""):
    """POST a JSON body as any HTTP client would: (status, parsed body, headers)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"X-Request-Id": request_id} if request_id
                                                 else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def push(source, base, version):
    """As the Pusher does: copy the export into BASE/VERSION."""
    shutil.copytree(source, base / str(version))


@pytest.fixture
def server(tmp_path, exported_models):
    base = tmp_path / "serving"
    push(exported_models[0], base, 1)
    repository = ModelRepository(MODEL, base, tmp_path / "config", poll_seconds=0.2)
    server = LocalModelServer(("127.0.0.1", 0), repository,
                              RequestLog(tmp_path / "requests.jsonl", 1.0, seed=0),
                              max_batch=100, seed=0)
    server.start_background()
    yield server
    server.close()


def client_for(server) -> ServingClient:
    return ServingClient("127.0.0.1", MODEL, rest_port=server.server_address[1])


def wait_for(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_predictions_equal_in_process_predictions(server, rows, exported_models):
    client = client_for(server)
    expected = in_process(exported_models[0], rows)
    by_rows = client.predict(rows)
    np.testing.assert_allclose(by_rows, expected, rtol=1e-6)
    np.testing.assert_allclose(client.predict(rows, version=1), expected, rtol=1e-6)
    # Columnar `inputs` format gives the same answers.
    instances = [payloads.encode_row(r) for r in rows]
    columnar = {name: [i[name] for i in instances] for name in instances[0]}
    outputs = client.request("POST", f"/v1/models/{MODEL}:predict", {"inputs": columnar})
    np.testing.assert_allclose(outputs["outputs"], expected, rtol=1e-6)
    # The tf.Example signature, with b64 strings, as TF Serving takes binary inputs.
    status = client.status()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    signatures = client.metadata()["metadata"]["signature_def"]["signature_def"]
    assert set(signatures["serving_default"]["inputs"]) == {f.name for f in F.SERVING_FEATURES}
    assert signatures["serving_default"]["inputs"]["fare"]["dtype"] == "DT_DOUBLE"


def test_grpc_request_carries_what_the_signature_needs(rows, exported_models):
    """The client's gRPC PredictRequest decodes (as a model server does) to the same answers."""
    request = payloads.predict_request(rows[:5], MODEL, label="stable")
    assert request.model_spec.version_label == "stable"
    model = tf.saved_model.load(exported_models[0])
    answers = model.signatures["serving_default"](**payloads.request_tensors(request))
    np.testing.assert_allclose(answers[M.PROBABILITY].numpy(),
                               in_process(exported_models[0], rows[:5]), rtol=1e-6)


def test_request_log_has_raw_features_predictions_and_keys(server, rows, tmp_path):
    client = client_for(server)
    client.predict(rows[:3], request_id="batch-7")
    client.predict(rows[3:4], request_id="trip-42")
    lines = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    assert lines[0]["features"]["payment_type"] == rows[0]["payment_type"]
    assert lines[0]["features"]["fare"] == pytest.approx(float(rows[0]["fare"]))
    assert 0.0 <= lines[0]["prediction"] <= 1.0 and lines[0]["version"] == 1
    assert [line["key"] for line in lines] == ["batch-7/0", "batch-7/1", "batch-7/2", "trip-42"]


BAD_REQUESTS = [
    ("malformed JSON", b'{"instances": [', 400, "malformed JSON"),
    ("no instances", {"signature_name": "serving_default"}, 400, "exactly one of"),
    ("empty instances", {"instances": []}, 400, "no examples"),
    ("missing feature", "drop:fare", 400, "instance 0: 'fare' is required: it was left out"),
    ("unknown feature", "add:colour", 400, "instance 0: unknown feature(s) ['colour']"),
    ("wrong type", "set:fare=twelve", 400, "'fare': 'twelve' is not a number"),
    ("null required", "set:fare=null", 400, "'fare' is required: it was null"),
    ("NaN required", "set:fare=NaN", 400, "'fare' is required: it was nan"),
    ("empty required string", 'set:payment_type=""', 400, "'payment_type' is required"),
    ("Infinity", "set:fare=Infinity", 400, "'fare': inf is not a finite number"),
    ("1e308", "set:trip_seconds=1e308", 400, "is not a finite number the model can compute"),
    ("negative fare", "set:fare=-50", 400, "'fare': -50 is below the schema's minimum 0"),
    ("hour 24", "set:trip_start_hour=24", 400, "above the schema's maximum 23"),
    ("number for string", "set:company=7", 400, "'company' expects a string, got int 7"),
    ("oversized batch", "many:101", 413, "exceeds this server's limit of 100 (--max-batch)"),
    ("unknown signature", {"signature_name": "nope", "instances": [1]}, 400, "signature 'nope'"),
]


def bad_body(kind, row):
    instance = payloads.encode_row(row)
    if isinstance(kind, dict | bytes):
        return kind
    action, _, arg = kind.partition(":")
    if action == "drop":
        del instance[arg]
    elif action == "add":
        instance[arg] = 1.0
    elif action == "set":
        name, value = arg.split("=")
        try:
            instance[name] = json.loads(value)  # NaN, Infinity, null, numbers, "strings"
        except json.JSONDecodeError:
            instance[name] = value
    elif action == "many":
        return {"instances": [instance] * int(arg)}
    return {"instances": [instance]}


def post_bytes(server, body: bytes) -> tuple[int, dict]:
    """A request body exactly as another language's JSON encoder wrote it."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.request("POST", f"/v1/models/{MODEL}:predict", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def js_stringify(value) -> bytes:
    """What a browser's JSON.stringify writes: NaN and Infinity as null, undefined dropped."""
    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), allow_nan=False).encode()


def test_absent_optional_values_in_any_spelling_get_the_absent_answer(server, rows):
    """Omitted, null (JSON.stringify's NaN), "" and NaN all mean absent, in rows and columns."""
    row = {**rows[0], "company": "", "trip_seconds": "", "dropoff_census_tract": ""}
    (expected,) = client_for(server).predict([row])
    instance = payloads.encode_row(row)  # "" and NaN, as serving.client sends them
    omitted = {k: v for k, v in instance.items()
               if k not in ("company", "trip_seconds", "dropoff_census_tract")}
    nulls = {**omitted, "company": None, "trip_seconds": None, "dropoff_census_tract": None}
    columnar = {k: [v, v] for k, v in nulls.items()}
    for body in ({"instances": [omitted]}, {"instances": [nulls]}, {"instances": [instance]},
                 {"inputs": columnar}):
        code, answer = post_bytes(server, js_stringify(body))
        assert code == 200, answer
        values = answer.get("predictions") or answer["outputs"]
        np.testing.assert_allclose(values[0], expected, rtol=1e-6)
        assert all(np.isfinite(values))


def test_a_javascript_client_cannot_slip_a_required_value_through_as_null(server, rows):
    instance = payloads.encode_row(rows[0])
    code, answer = post_bytes(server, js_stringify({"instances": [{**instance,
                                                                   "fare": float("nan")}]}))
    assert code == 400 and "'fare' is required: it was null" in answer["error"]


@pytest.mark.parametrize("name,kind,status,message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(
        server, rows, name, kind, status, message):
    client = client_for(server)
    body = bad_body(kind, rows[0])
    if isinstance(body, bytes):  # not JSON at all: send the bytes as they are
        client._http = None
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("POST", f"/v1/models/{MODEL}:predict", body=body)
        response = conn.getresponse()
        code, error = response.status, json.loads(response.read())["error"]
    else:
        with pytest.raises(ServingError) as raised:
            client.request("POST", f"/v1/models/{MODEL}:predict", body)
        code, error = raised.value.status, raised.value.message
    assert code == status and message in error, error
    assert len(client.predict(rows[:2])) == 2  # still serving


@pytest.mark.parametrize("path,message", [
    (f"/v1/models/{MODEL}/versions/7:predict", "version 7"),
    (f"/v1/models/{MODEL}/labels/canary:predict", "label 'canary'"),
    ("/v1/models/other:predict", "model 'other' is not served here"),
])
def test_unknown_version_label_or_model_is_404(server, rows, path, message):
    client = client_for(server)
    with pytest.raises(ServingError) as raised:
        client.request("POST", path, {"instances": [payloads.encode_row(rows[0])]})
    assert raised.value.status == 404 and message in raised.value.message


def test_new_version_under_load_without_failed_requests(server, rows, tmp_path, exported_models):
    """Bounded load (4 threads, <= 400 requests each, <= 60 s) while version 2 lands."""
    failures, served_by = [], []
    stop = threading.Event()

    def load():
        client = client_for(server)
        deadline = time.monotonic() + 60
        for i in range(400):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                client.predict(rows[i % 8: i % 8 + 2])
                served_by.append(client.last_served_by.split(";")[0])
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    push(exported_models[1], server.repository.base_path, 2)
    assert wait_for(lambda: set(server.repository.snapshot.versions) == {2})
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures[:3]
    assert "1" in served_by and served_by[-1] == "2"
    np.testing.assert_allclose(client_for(server).predict(rows),
                               in_process(exported_models[1], rows), rtol=1e-6)


def test_corrupted_version_leaves_the_old_one_serving(server, rows, caplog, exported_models):
    base = server.repository.base_path
    (base / "5").mkdir()
    (base / "5" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with caplog.at_level(logging.ERROR, logger="serving.server"):
        server.repository.refresh()
    assert set(server.repository.snapshot.versions) == {1}
    assert any("version 5" in r.message and "failed to load" in r.message for r in caplog.records)
    status = client_for(server).status()["model_version_status"]
    assert {s["version"]: s["state"] for s in status} == {"5": "END", "1": "AVAILABLE"}
    np.testing.assert_allclose(client_for(server).predict(rows),
                               in_process(exported_models[0], rows), rtol=1e-6)


def test_canary_split_promote_and_rollback(server, rows, tmp_path, exported_models):
    base, config_dir = server.repository.base_path, tmp_path / "config"
    push(exported_models[1], base, 2)
    rollouts = Rollouts(MODEL, base, config_dir)
    rollouts.set_stable(1)
    rollouts.canary(2, fraction=0.3)
    server.repository.refresh()
    written = model_config.read_config(config_dir / model_config.CONFIG_FILE)
    entry = written.model_config_list.config[0]
    assert entry.base_path == str(base) and list(entry.model_version_policy.specific.versions) \
        == [1, 2] and dict(entry.version_labels) == {"stable": 1, "canary": 2}

    client = client_for(server)
    routes = []
    for i in range(400):  # bounded
        client.predict(rows[i % 16: i % 16 + 1])
        routes.append(client.last_served_by)
    canary_share = sum(r == "2;canary" for r in routes) / len(routes)
    assert abs(canary_share - 0.3) < 0.08, canary_share
    assert set(routes) == {"1;stable", "2;canary"}
    np.testing.assert_allclose(client.predict(rows, label="canary"),
                               in_process(exported_models[1], rows), rtol=1e-6)

    rollouts.promote()
    server.repository.refresh()
    client.predict(rows[:1])
    assert client.last_served_by == "2;stable"

    rollouts.rollback()  # back to the previous stable version, in one command
    server.repository.refresh()
    assert set(server.repository.snapshot.versions) == {1}
    client.predict(rows[:1])
    assert client.last_served_by == "1;stable"
    written = model_config.read_config(config_dir / model_config.CONFIG_FILE)
    entry = written.model_config_list.config[0]
    assert list(entry.model_version_policy.specific.versions) == [1]
    assert dict(entry.version_labels) == {"stable": 1}
    actions = [h["action"] for h in rollouts.state().history]
    assert actions == ["stable 1", "canary 2 at 30%", "promote 2", "rollback 2 -> 1"]


def test_rollout_commands_refuse_what_cannot_be_done(tmp_path, exported_models):
    base = tmp_path / "serving"
    rollouts = Rollouts(MODEL, base, tmp_path / "config")
    with pytest.raises(model_config.RolloutError, match="no pushed versions"):
        rollouts.set_stable()
    push(exported_models[0], base, 1)
    with pytest.raises(model_config.RolloutError, match="no stable version yet"):
        rollouts.canary(1, 0.1)
    rollouts.set_stable()
    with pytest.raises(model_config.RolloutError, match="already stable"):
        rollouts.canary(1, 0.1)
    with pytest.raises(model_config.RolloutError, match="version 9 is not under"):
        rollouts.canary(9, 0.1)
    with pytest.raises(model_config.RolloutError, match="no version to roll back to"):
        rollouts.rollback()
    assert list(itertools.islice(rollouts.state().history, 1))[0]["stable"] == 1


@pytest.fixture
def served_process(tmp_path, exported_models):
    """`python -m serving.server` as the README starts it, with small limits."""
    import subprocess
    import sys

    from models.local_cluster import free_ports

    push(exported_models[0], tmp_path / "serving", 1)
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port", str(port), "--model-name", MODEL,
         "--model-base-path", str(tmp_path / "serving"), "--config-dir", str(tmp_path / "cfg"),
         "--request-log", "", "--max-body-mb", "1", "--max-batch", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TAXI_OUTPUT_ROOT": str(tmp_path / "out")})
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL}"
    try:
        assert wait_for(lambda: _status(url) == 200 or process.poll() is not None, 120), \
            "the server did not answer within 120 s"
        assert process.poll() is None, process.communicate()[0]
        yield port, url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except (urllib.error.URLError, ConnectionError):
        return None


def test_oversized_requests_are_answered_with_the_limit_and_the_setting(served_process, rows):
    """A body over --max-body-mb and a batch over --max-batch get 413 and a JSON error that
    names the limit and its setting, from the real server: with curl (which announces a
    large body with `Expect: 100-continue`), with a client that sends the whole body at once,
    and with one that only sends headers and waits; the server then keeps serving."""
    import http.client
    import socket
    import subprocess

    port, url = served_process
    instance = payloads.encode_row(rows[0])
    huge = json.dumps({"instances": [instance] * 20_000}).encode()  # ~8 MB, far over 1 MiB
    assert len(huge) > 5 << 20

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", f"/v1/models/{MODEL}:predict", body=huge,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    error = json.loads(response.read())["error"]
    assert response.status == 413, error
    assert f"{len(huge):,} bytes" in error and "1,048,576 bytes" in error
    assert "--max-body-mb" in error

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(huge)}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        answer = sock.makefile("rb").read().decode()  # before a byte of the body was sent
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "--max-body-mb" in answer

    body_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"huge-{port}.json"
    body_file.write_bytes(huge)
    try:
        curl = subprocess.run(["curl", "-sS", "-X", "POST", f"{url}:predict",
                               "--data-binary", f"@{body_file}", "-w", "\n%{http_code}"],
                              capture_output=True, text=True, timeout=60)
    finally:
        body_file.unlink()
    answer, _, code = curl.stdout.rpartition("\n")
    assert curl.returncode == 0 and code == "413", (curl.returncode, curl.stderr)
    assert "--max-body-mb" in json.loads(answer)["error"]

    too_many = json.dumps({"instances": [instance] * 101}).encode()
    assert len(too_many) < 1 << 20
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", f"/v1/models/{MODEL}:predict", body=too_many)
    response = conn.getresponse()
    error = json.loads(response.read())["error"]
    assert response.status == 413
    assert "batch of 101 examples exceeds this server's limit of 100 (--max-batch)" in error

    for header, status, says in (("Transfer-Encoding: chunked", 411, "send Content-Length"),
                                 ("Content-Length: abc", 400, "'abc' is not a number")):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                         f"{header}\r\n\r\n".encode())
            answer = sock.makefile("rb").read().decode()
        assert answer.startswith(f"HTTP/1.1 {status}") and says in answer, answer

    ok = json.dumps({"instances": [instance] * 3}).encode()
    conn.request("POST", f"/v1/models/{MODEL}:predict", body=ok)
    response = conn.getresponse()
    assert response.status == 200 and len(json.loads(response.read())["predictions"]) == 3
