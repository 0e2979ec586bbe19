"""Who may change what, through the real server and router on loopback: labels that move the
bandit's traffic need the configured credential, a flood without it moves nothing, and the
secret is never written anywhere."""

import json
import logging
import urllib.request

import pytest

from control import records
from serving import auth, server
from serving import bandit as B
from serving.request_log import RequestLog
from serving.rollout import Rollouts
from serving.router import Router, RoutingState
from serving.server import LocalModelServer, ModelRepository
from serving.server_test import MODEL, push, wait_for

SECRET = "s3cr3t-4f8a9b0c1d2e3f405162738495a6b7c8"
WRONG = "x" * len(SECRET)  # the right length, the wrong token


def post(url: str, body: dict, token: str | None = None, request_id: str = ""):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if request_id:
        headers["X-Request-Id"] = request_id
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def guarded(tmp_path, exported_models):
    """A bandit over versions 1 and 2, behind a server and a router that take labels only
    with the `labeller` credential, at most 1,500 a minute."""
    base, config, control = tmp_path / "serving", tmp_path / "config", str(tmp_path / "control")
    push(exported_models[0], base, 1)
    push(exported_models[1], base, 2)
    Rollouts(MODEL, base, config).start_bandit([1, 2], None, reward="accuracy", floor=0.05)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may post labels\nlabeller {SECRET}\n")
    tokens.chmod(0o600)
    writes = auth.WriteAuth.from_settings(str(tokens), max_labels_per_minute=1500, env={})
    repository = ModelRepository(MODEL, base, config, 0.2, control_dir=control)
    local = LocalModelServer(("127.0.0.1", 0), repository,
                             RequestLog(tmp_path / "requests.jsonl", 1.0, seed=0), seed=0,
                             write_auth=writes)
    local.start_background()
    router = Router(("127.0.0.1", 0), local.url, MODEL, RoutingState(config, 0.2, control),
                    seed=1, write_auth=auth.WriteAuth.from_settings(str(tokens), 1500, env={}))
    router.start_background()
    yield local, router, config, control, tmp_path
    router.close()
    local.close()


def test_a_forged_flood_moves_nothing_and_the_same_labels_with_the_credential_count(
        guarded, rows, caplog):
    local, router, config, control, tmp_path = guarded
    store = B.BanditStore(config)
    assert wait_for(lambda: local.repository.snapshot.bandit, seconds=20)
    for i in range(1000):  # keyed requests the bandit routed: what labels join on
        status, _ = post(f"{local.url}/v1/models/{MODEL}:predict", {"instances": [rows[0]]},
                         request_id=f"k{i}")
        assert status == 200
    before = store.load().weights
    version_of = {k: r["version"] for k, r in store._ledger().items()}
    # The forger rewards whatever version 1 answered and punishes version 2, 1,000 times.
    flood = {"labels": [{"key": k, "label": int(v == 1)} for k, v in version_of.items()]}
    with caplog.at_level(logging.INFO):
        for url in (local.url, router.url):
            status, reply = post(f"{url}/v1/models/{MODEL}:feedback", flood)
            assert status == 401 and "Authorization: Bearer" in reply["error"]
            status, reply = post(f"{url}/v1/models/{MODEL}:feedback", flood, token=WRONG)
            assert status == 403 and "not valid" in reply["error"]
        assert store.load().weights == before and sum(a.labels for a in store.load().arms) == 0
        # Over the cap: refused whole, the limit named, nothing applied.
        status, reply = post(f"{local.url}/v1/models/{MODEL}:feedback", {"labels": [
            *flood["labels"], *flood["labels"][:600]]}, token=SECRET)
        assert status == 429 and "1,500 labels a minute" in reply["error"]
        assert sum(a.labels for a in store.load().arms) == 0
        status, reply = post(f"{router.url}/v1/models/{MODEL}:feedback", flood, token=SECRET)
        assert status == 200 and reply["accepted"] == 1000
        # One cap across processes: the router's 1,000 count at the server too.
        status, reply = post(f"{local.url}/v1/models/{MODEL}:feedback",
                             {"labels": flood["labels"][:600]}, token=SECRET)
        assert status == 429 and "(1,000 in the last minute)" in reply["error"], reply
    assert sum(a.labels for a in store.load().arms) == 1000
    accepted = [r for r in records.read(control, ("feedback",))]
    assert [(r.who, r.details["labels"], r.details["via"]) for r in accepted] == [
        ("labeller", 1000, "router")]
    written = caplog.text + (tmp_path / "requests.jsonl").read_text() + "".join(
        p.read_text() for p in (tmp_path / "control").rglob("*.json")) + "".join(
        p.read_text() for p in config.iterdir() if p.is_file())
    assert SECRET not in written and SECRET[:12] not in written


def test_without_a_credential_writes_stay_on_loopback_and_the_network_is_refused(
        tmp_path, exported_models, capsys):
    base = tmp_path / "serving"
    push(exported_models[0], base, 1)
    repository = ModelRepository(MODEL, base, tmp_path / "config", 0.2)
    open_writes = auth.WriteAuth.from_settings(None, env={})
    with pytest.raises(auth.AuthError, match="refusing to listen on 0.0.0.0"):
        LocalModelServer(("0.0.0.0", 0), repository, write_auth=open_writes)
    read_only = LocalModelServer(("0.0.0.0", 0), repository, read_only=True)
    read_only.server_close()
    assert server.main(["--host", "0.0.0.0", "--port", "0", "--model-base-path", str(base),
                        "--config-dir", str(tmp_path / "config")]) == 2
    assert "refusing to listen on 0.0.0.0 with write paths open" in capsys.readouterr().err
    # On loopback a caller without a credential may write, recorded by address.
    assert open_writes.who({}, "127.0.0.1") == ("loopback:127.0.0.1", None)
    name, refusal = open_writes.who({}, "10.1.2.3")
    assert name is None and refusal.status == 403
    # ... but not when a proxy on this machine forwarded it: then everyone looks like loopback.
    for header in ("X-Forwarded-For", "Forwarded", "Via", "X-Real-IP"):
        name, refusal = open_writes.who({header: "203.0.113.9"}, "127.0.0.1")
        assert name is None and refusal.status == 403 and header in refusal.message


def test_a_tokens_file_with_a_short_secret_is_refused_with_the_line(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("labeller short\n")
    tokens.chmod(0o600)
    with pytest.raises(auth.AuthError, match="tokens:1: write `NAME SECRET`"):
        auth.WriteAuth.from_settings(str(tokens), env={})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_tokens_file_others_may_read_is_refused_at_start_naming_the_fix(
        tmp_path, mode, exported_models, capsys):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"labeller {SECRET}\n")
    tokens.chmod(mode)
    with pytest.raises(auth.AuthError, match=f"chmod 600 {tokens}"):
        auth.WriteAuth.from_settings(str(tokens), env={})
    base = tmp_path / "serving"
    push(exported_models[0], base, 1)
    assert server.main(["--port", "0", "--model-base-path", str(base), "--write-tokens-file",
                        str(tokens), "--config-dir", str(tmp_path / "config")]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and f"(mode {mode:o})" in said[0] and "chmod 600" in said[0]
    tokens.chmod(0o600)
    assert auth.WriteAuth.from_settings(str(tokens), env={}).configured
