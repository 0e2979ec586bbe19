"""A local server that speaks TF Serving's REST API v1 for the Pusher's directory.

TF Serving runs from its container in production (serving/deploy/); this serves the same
versioned directory where there is no Docker, with the same URLs and JSON:

  GET  /v1/models/NAME[/versions/V | /labels/L]            model status
  GET  /v1/models/NAME[/versions/V | /labels/L]/metadata   signatures
  POST /v1/models/NAME[/versions/V | /labels/L]:predict    row `instances` or columnar `inputs`

and loads versions as TF Serving does: a new version is loaded (and warmed up with its
assets.extra/tf_serving_warmup_requests) before the old one is unloaded; a version that
fails to load is logged and the old one keeps serving. With a models.config written by
`serving.rollout`, it serves exactly the `stable` and `canary` versions, and splits
unversioned requests between them by the canary fraction (the `X-Served-By` response
header and the request log say which answered). A sample of requests and predictions is
logged as JSONL (raw features) for skew and prediction monitoring. With
`--prediction-table`, rows whose key is in a table of precomputed predictions are answered
from it while its model version is the one serving (serving/hybrid.py).

Writes (`POST /v1/models/NAME:feedback`, labels for the bandit) follow serving/routes.py and
serving/auth.py, as the router does; every request is bounded in time, connections and size
(serving/connections.py, serving/body_limits.py) and every refusal is JSON naming its cause.
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: TensorFlow's import-time C++ lines go to its log
    from settings import quiet as _quiet

    _quiet.hold_native_stderr()

import argparse
import dataclasses
import json
import logging
import random
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from control import marks
from models import problem as P
from models.model import PROBABILITY
from serving import (
    answering,
    auth,
    bandit,
    body_limits,
    connections,
    hybrid,
    model_config,
    payloads,
    routes,
    versions,
)
from serving import pause as pause_mod
from serving.request_log import RequestLog
from settings import quiet

log = logging.getLogger("serving.server")

class NotFound(LookupError):
    """HTTP 404 with this message."""


class Unavailable(RuntimeError):
    """HTTP 503 with this message: nothing can answer right now."""


@dataclasses.dataclass
class LoadedVersion:
    version: int
    model: Any


def _fingerprint(path: Path) -> tuple:
    """(files, bytes, newest mtime) of a version directory: a copy still landing (the Pusher
    copies file by file) changes it, so a load that failed half-way is tried again."""
    files = [p.stat() for p in path.rglob("*") if p.is_file()]
    return (len(files), sum(s.st_size for s in files), max((s.st_mtime for s in files), default=0))


@dataclasses.dataclass
class Snapshot:
    """What is being served right now; replaced whole, never mutated, so readers need no lock."""

    versions: dict[int, LoadedVersion]
    labels: dict[str, int]
    canary_fraction: float
    bandit: dict[int, float] = dataclasses.field(default_factory=dict)  # version -> share
    table: hybrid.PredictionTable | None = None  # precomputed predictions (hybrid serving)
    pause: pause_mod.Pause | None = None  # while paused: who answers instead (pause.py)
    marks: tuple = ()  # contamination marks (control/marks.py): the bandit learns nothing there


class ModelRepository:
    """Watches a TF Serving base path (and optionally models.config) and keeps versions loaded."""

    def __init__(self, model_name: str, base_path: str | Path, config_dir: str | Path | None = None,
                 poll_seconds: float = 2.0, table_path: str | Path | None = None,
                 lookup_key: str | None = None, control_dir: str | None = None):
        self.model_name = model_name
        self.control_dir = control_dir
        self.table_path = Path(table_path) if table_path else None
        # The row field that carries a key: taken out of rows and logged, looked up in the
        # table. Given, or the first table's key column.
        self.lookup_key = lookup_key
        self._table_seen: tuple | None = None  # the table files' state last looked at
        self._stale_warned: set[tuple[int | None, int]] = set()
        self.base_path = Path(base_path)
        self.config_dir = Path(config_dir) if config_dir else None
        self.bandit = bandit.BanditStore(self.config_dir) if self.config_dir else None
        self.poll_seconds = poll_seconds
        self.snapshot = Snapshot({}, {}, 0.0)
        self.errors: dict[int, tuple[tuple, str]] = {}  # version -> (fingerprint, error)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    # ------------------------------------------------------------ loading

    def _rollout(self) -> model_config.Rollout:
        return model_config.load_state(self.config_dir) if self.config_dir else \
            model_config.Rollout()

    def refresh(self) -> None:
        """One poll: load what should be served, then unload what should not."""
        with self._refresh_lock:
            rollout = self._rollout()
            on_disk = versions.pushed_versions(self.base_path)
            wanted = [v for v in rollout.versions if v in on_disk] if rollout.versions else \
                on_disk[-1:]
            loaded = dict(self.snapshot.versions)
            for version in wanted:
                if version in loaded:
                    continue  # as TF Serving: a loaded version is not reloaded
                failed = self.errors.get(version)
                if failed and failed[0] == _fingerprint(self.base_path / str(version)):
                    continue  # already failed in this state; retried when the files change
                model = self._load(version)
                if model is not None:
                    loaded[version] = LoadedVersion(version, model)
            available = [v for v in wanted if v in loaded]
            if available:  # unload only once something wanted can serve in its place
                loaded = {v: m for v, m in loaded.items() if v in wanted}
            labels = {label: v for label, v in rollout.labels().items() if v in loaded}
            running = self.bandit.load() if self.bandit and rollout.bandit else None
            paused = pause_mod.from_dict(rollout.pause)
            new = Snapshot(loaded, labels, rollout.canary_fraction if "canary" in labels else 0.0,
                           running.weights if running else {}, self._table(), paused,
                           tuple(marks.active(self.control_dir)) if self.control_dir else ())
            if paused != self.snapshot.pause:
                log.warning("serving %s: %s", "PAUSED, " + paused.fallback + " answers: "
                            + paused.reason if paused else "resumed: the model answers again",
                            self.model_name)
            if (set(new.versions) != set(self.snapshot.versions)
                    or new.labels != self.snapshot.labels
                    or set(new.bandit) != set(self.snapshot.bandit)):
                log.info("serving %s versions %s labels %s%s", self.model_name,
                         sorted(new.versions), new.labels,
                         f" bandit over {sorted(new.bandit)}" if new.bandit else "")
            self.snapshot = new

    def _table(self) -> hybrid.PredictionTable | None:
        """The prediction table, reloaded when its files change; a table that fails to load
        is logged and the one before it (or none) stays."""
        current = self.snapshot.table
        if self.table_path is None:
            return None
        state = hybrid._fingerprint(self.table_path)
        if state == self._table_seen:
            return current
        self._table_seen = state
        try:
            table = hybrid.PredictionTable.load(self.table_path)
            if self.lookup_key is None:
                self.lookup_key = table.meta.key
            elif table.meta.key != self.lookup_key:
                raise hybrid.HybridError(f"it is keyed by {table.meta.key!r}, but requests "
                                         f"carry their key in {self.lookup_key!r}")
        except (hybrid.HybridError, OSError) as e:
            log.error("prediction table not loaded, %s: %s", "keeping the one before" if current
                      else "the model answers every row", e)
            return current
        log.info("prediction table %s: %s", self.table_path, table.describe())
        return table

    def table_for(self, version: int) -> hybrid.PredictionTable | None:
        """The table when it was made by `version`, else None (and one warning per pair)."""
        table = self.snapshot.table
        if table is None or table.serves(version):
            return table
        pair = (table.meta.version, version)
        if pair not in self._stale_warned:
            self._stale_warned.add(pair)
            log.warning("prediction table %s was made by version %s, not by version %s that "
                        "serves: the model answers", self.table_path, table.meta.version, version)
        return None

    def _load(self, version: int):
        path = self.base_path / str(version)
        started = time.monotonic()
        try:
            problem = P.from_model(str(path))  # the contract it was trained under
            P.adopt(problem)
            model = tf.saved_model.load(str(path))
            if payloads.RAW_SIGNATURE not in model.signatures:
                raise ValueError(f"no {payloads.RAW_SIGNATURE!r} signature")
            warmup = path / payloads.WARMUP_FILE
            calls = payloads.warmup_calls(model, str(warmup)) if warmup.is_file() else []
            for signature, tensors in calls:
                signature(**tensors)
            replayed = len(calls)
        except Exception as e:  # noqa: BLE001 - any failure means "do not serve this version"
            self.errors[version] = (_fingerprint(path), f"{type(e).__name__}: {e}")
            log.error("version %s of %s failed to load from %s; still serving %s: %s",
                      version, self.model_name, path, sorted(self.snapshot.versions) or "nothing",
                      self.errors[version][1].splitlines()[0][:500])
            return None
        self.errors.pop(version, None)
        log.info("loaded version %s of %s in %.1f s (%d warmup requests replayed)",
                 version, self.model_name, time.monotonic() - started, replayed)
        return model

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="model-watcher", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad poll
                log.exception("polling %s failed", self.base_path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------ routing

    def answer(self, snap: Snapshot, version: str | None, label: str | None,
               rng: random.Random) -> answering.Answer:
        """Who answers a request under `snap` (serving/answering.py: the rule the router and
        the stream follow too)."""
        rollout = answering.Snapshot(labels=snap.labels, canary_fraction=snap.canary_fraction,
                                     bandit=snap.bandit, pause=snap.pause)
        try:
            return answering.choose(rollout, snap.versions, rng, version, label)
        except answering.NoVersion as e:
            raise NotFound(f"model {self.model_name}: {e}"
                           + (f" under {self.base_path}" if not snap.versions else "")) from None

    def resolve(self, version: str | None, label: str | None,
                rng: random.Random) -> tuple[LoadedVersion, str]:
        """(version to serve, how it was chosen) for a read (status, metadata): explicit
        version or label, else the split; a pause does not change what they describe."""
        snap = self.snapshot
        unpaused = dataclasses.replace(snap, pause=None)
        answer = self.answer(unpaused, version, label, rng)
        return snap.versions[answer.version], answer.route

    def status(self, version: str | None, label: str | None) -> dict:
        snap = self.snapshot
        if version is not None or label is not None:
            chosen, _ = self.resolve(version, label, random.Random(0))
            shown = [chosen.version]
        else:
            shown = sorted(set(snap.versions) | set(self.errors), reverse=True)
        statuses = []
        for v in shown:
            if v in snap.versions:
                statuses.append({"version": str(v), "state": "AVAILABLE",
                                 "status": {"error_code": "OK", "error_message": ""}})
            else:
                statuses.append({"version": str(v), "state": "END",
                                 "status": {"error_code": "UNKNOWN",
                                            "error_message": self.errors[v][1][:1000]}})
        return {"model_version_status": statuses}


def signature_metadata(model) -> dict:
    def tensor(spec: tf.TensorSpec) -> dict:
        dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape]
        return {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
                "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": spec.name or ""}

    signatures = {}
    for name, fn in model.signatures.items():
        inputs = payloads.input_specs(fn)
        outputs = fn.structured_outputs
        signatures[name] = {
            "inputs": {k: tensor(v) for k, v in inputs.items()},
            "outputs": {k: tensor(tf.TensorSpec(v.shape, v.dtype, k)) for k, v in outputs.items()},
            "method_name": "tensorflow/serving/predict",
        }
    return {"signature_def": {"signature_def": signatures}}


class Conflict(RuntimeError):
    """HTTP 409 with this message: a request id already answered."""


class Handler(body_limits.LimitedBody, connections.BoundedHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    disable_nagle_algorithm = True  # headers and body go out as written: no 40 ms ACK stalls
    server: LocalModelServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[routes.Route, ModelRepository]:
        match = routes.parse(self.path)
        if match is None:
            raise NotFound(f"unknown path {self.path}; expected /v1/models/NAME[/versions/N|"
                           f"/labels/L][/metadata|:predict]")
        repo = self.server.repository
        if match.name != repo.model_name:
            raise NotFound(f"model {match.name!r} is not served here; "
                           f"this server serves {repo.model_name!r}")
        return match, repo

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        try:
            match, repo = self._route()
            if match.rest in (routes.PREDICT, routes.FEEDBACK):
                return self._reply(HTTPStatus.METHOD_NOT_ALLOWED,
                                   {"error": f"{match.rest} takes POST"})
            if match.rest == routes.METADATA:
                chosen, _ = repo.resolve(match.version, match.label, self.server.rng)
                return self._reply(HTTPStatus.OK, {
                    "model_spec": {"name": repo.model_name, "signature_name": "",
                                   "version": str(chosen.version)},
                    "metadata": signature_metadata(chosen.model)})
            self._reply(HTTPStatus.OK, repo.status(match.version, match.label))
        except NotFound as e:
            self._reply(HTTPStatus.NOT_FOUND, {"error": str(e)})

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        try:
            raw = self.read_body()
            if raw is None:  # refused, and answered
                return
            if routes.is_write(self.path):
                misplaced = routes.misplaced_write(self.path, self.server.repository.model_name)
                if misplaced:
                    raise NotFound(misplaced)
            match, repo = self._route()
            if match.rest not in (routes.PREDICT, routes.FEEDBACK):
                raise NotFound(f"POST {self.path}: only :predict and :feedback take POST")
            body = body_limits.parse_json(raw)
            if match.rest == routes.FEEDBACK:
                return self._feedback(repo, body)
            request_id = self.headers.get("X-Request-Id", "")
            try:
                bandit.check_request_id(request_id)
            except model_config.RolloutError as e:
                raise payloads.RequestError(str(e)) from None
            snap = repo.snapshot  # read once: the whole request sees one state
            paused = snap.pause
            answer = repo.answer(snap, match.version, match.label, self.server.rng)
            if answer.refusal is not None:
                return self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": answer.refusal},
                                   paused.headers() if paused else {})
            if answer.constant is not None:
                return self._constant(repo, body, paused)
            chosen, route = snap.versions[answer.version], answer.route
            signature_name = body.get("signature_name") or payloads.RAW_SIGNATURE \
                if isinstance(body, dict) else payloads.RAW_SIGNATURE
            if signature_name not in chosen.model.signatures:
                raise payloads.RequestError(
                    f"signature {signature_name!r} not found; the model has "
                    f"{sorted(chosen.model.signatures)}")
            signature = chosen.model.signatures[signature_name]
            keys, table = None, None
            if repo.lookup_key and signature_name == payloads.RAW_SIGNATURE:
                try:
                    body, keys = hybrid.take_keys(body, repo.lookup_key)
                except hybrid.HybridError as e:
                    raise payloads.RequestError(str(e)) from None
                table = repo.table_for(chosen.version)
            inputs, rows = payloads.decode_predict(body, signature, self.server.max_batch)
            size = len(next(iter(inputs.values())))
            if keys is not None and len(keys) != size:
                raise payloads.RequestError(f"{len(keys)} keys for {size} examples: the key "
                                            "input must have one value per example")
            found = table.lookup(keys) if table is not None and keys else None
            outputs = _predict(signature, inputs, found)
            response = payloads.encode_predictions(outputs, rows)
            if route == "bandit":
                taken = repo.bandit.routed(
                    chosen.version, bandit.keyed_probabilities(response, request_id), size,
                    payloads.rows_of(inputs) if signature_name == payloads.RAW_SIGNATURE
                    else None)
                if taken:
                    raise Conflict(bandit.already_answered(taken))
            from_table = [p is not None for p in found] if found else None
            self.server.request_log.write(repo.model_name, chosen.version, route,
                                          signature_name, inputs, response, request_id,
                                          keys, from_table,
                                          paused.log_field() if paused else None)
            headers = {"X-Served-By": route if paused else f"{chosen.version};{route}",
                       **(paused.headers() if paused else {})}
            if repo.lookup_key:
                headers["X-Prediction-Source"] = hybrid.source_header(
                    from_table or [False] * size)
            self._reply(HTTPStatus.OK, response, headers)
        except body_limits.BodyRefused as e:
            self._reply(e.status, {"error": str(e)})
        except Conflict as e:
            self._reply(HTTPStatus.CONFLICT, {"error": str(e)})
        except payloads.TooLarge as e:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(e)})
        except payloads.RequestError as e:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        except NotFound as e:
            self._reply(HTTPStatus.NOT_FOUND, {"error": str(e)})
        except Unavailable as e:
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - answer, log, keep serving
            log.exception("predict failed")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"})

    def _constant(self, repo: ModelRepository, body: Any, paused: pause_mod.Pause) -> None:
        """While paused with `constant`: every valid row gets the stated probability; rows the
        contract refuses are refused as always."""
        inputs, rows = payloads.decode_raw_predict(body, self.server.max_batch)
        size = len(next(iter(inputs.values())))
        response = {"predictions" if rows else "outputs": [paused.constant] * size}
        self.server.request_log.write(repo.model_name, None, paused.route(),
                                      payloads.RAW_SIGNATURE, inputs, response,
                                      self.headers.get("X-Request-Id", ""),
                                      paused=paused.log_field())
        self._reply(HTTPStatus.OK, response, {"X-Served-By": paused.route(), **paused.headers()})

    def _feedback(self, repo: ModelRepository, body: Any) -> None:
        """Late labels by request key: the bandit's rewards. All or nothing per request, and
        only from a caller with a credential (serving/auth.py)."""
        if self.server.read_only:
            return self._reply(HTTPStatus.FORBIDDEN, {"error": "this server is read-only: "
                                                      "it takes no labels"})
        if repo.bandit is None:
            raise NotFound("this server has no --config-dir, so no bandit to give labels to")
        try:
            reply = auth.take_feedback(self.server.auth, self.headers, self.client_address[0], body,
                             repo.bandit, repo.snapshot.pause is not None, repo.snapshot.marks,
                             repo.control_dir, "server")
        except model_config.RolloutError as e:
            raise payloads.RequestError(str(e)) from None
        if isinstance(reply, auth.Refusal):
            return self._reply(reply.status, {"error": reply.message}, reply.headers)
        repo.refresh()  # route by the new weights from the next request on
        self._reply(HTTPStatus.OK, reply)


def _predict(signature, inputs: dict[str, tf.Tensor],
             found: list[float | None] | None) -> dict[str, tf.Tensor]:
    """The signature's outputs, with rows whose prediction a table holds taken from it:
    the model runs only on the other rows (not at all when every row was found)."""
    if found is not None and set(signature.structured_outputs) != {PROBABILITY}:
        found = None  # a table holds one output; the model answers every row
    if found is None or all(p is None for p in found):
        try:
            return signature(**inputs)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            raise payloads.RequestError(
                f"the model rejected the input: {payloads.model_error(e)}") from None
    merged = np.array([p if p is not None else np.nan for p in found], dtype=np.float32)
    missing = [i for i, p in enumerate(found) if p is None]
    if missing:
        computed = _predict(signature, {k: tf.gather(v, missing) for k, v in inputs.items()},
                            None)[PROBABILITY].numpy()
        merged[missing] = computed
    return {PROBABILITY: tf.constant(merged)}


class LocalModelServer(connections.BoundedServer):
    def __init__(self, address: tuple[str, int], repository: ModelRepository,
                 request_log: RequestLog | None = None, max_batch: int = 1000,
                 max_body_bytes: int = body_limits.DEFAULT_MAX_BODY_BYTES,
                 seed: int | None = None,
                 write_auth: auth.WriteAuth | None = None, read_only: bool = False,
                 request_timeout: float = connections.DEFAULT_REQUEST_TIMEOUT,
                 max_connections: int = connections.DEFAULT_MAX_CONNECTIONS):
        self.auth = write_auth or auth.WriteAuth()
        self.read_only = read_only
        self.auth.check_bind(address[0], writes=not read_only)
        super().__init__(address, Handler, request_timeout, max_connections)
        self.repository = repository
        self.request_log = request_log or RequestLog(None, 0.0)
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.rng = random.Random(seed)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_background(self) -> threading.Thread:
        """Serve from a thread (tests, notebooks); `shutdown()` stops it."""
        self.repository.start()
        thread = threading.Thread(target=self.serve_forever, name="rest-server", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.repository.stop()
        self.request_log.close()


def main(argv: list[str] | None = None) -> int:
    from settings.layout import Layout

    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Layout.load()
    parser.add_argument("--port", type=int, default=8501, help="REST port (TF Serving's: 8501)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--model-name", default=defaults.serving_model_name)
    parser.add_argument("--model-base-path", default=defaults.serving_dir,
                        help="the Pusher's versioned directory")
    parser.add_argument("--config-dir", default=defaults.serving_config_dir,
                        help="where serving.rollout keeps models.config and rollout.json")
    parser.add_argument("--poll-seconds", type=float, default=2.0,
                        help="how often to look for new versions and label changes")
    parser.add_argument("--request-log", default=defaults.serving_request_log,
                        help="JSONL of sampled requests and predictions ('' to disable)")
    parser.add_argument("--log-sample-rate", type=float, default=0.1,
                        help="fraction of predicted rows written to the request log")
    parser.add_argument("--max-batch", type=int, default=1000,
                        help="most examples in one :predict (more: 413 naming the limit)")
    body_limits.add_argument(parser)
    connections.add_arguments(parser)
    parser.add_argument("--prediction-table",
                        help="precomputed predictions (serving.batch_predict's .parquet/.csv "
                             "and its .meta.json): rows carrying a key found there are answered "
                             "from it while its model version serves; reloaded when it changes")
    parser.add_argument("--lookup-key",
                        help="the row field that carries a key (default: the table's key "
                             "column): taken out of rows, logged as lookup_key for "
                             "`serving.hybrid analyze`, looked up in the table")
    auth.add_write_arguments(parser)
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        level = quiet.terminal_level(args.log_level, args.verbose)
        writes = auth.write_auth(args)
        writes.check_bind(args.host, writes=not args.read_only)
        connections.check(args.request_timeout, args.max_connections)
    except ValueError as e:  # AuthError too: a bad setting, said before anything starts
        print(f"serving.server: {e}", file=sys.stderr)
        return 2
    if not 0.0 <= args.log_sample_rate <= 1.0:
        parser.error("--log-sample-rate must be in [0, 1]")
    if not Path(args.model_base_path).is_dir():
        print(f"serving.server: {args.model_base_path} does not exist; run the pipeline "
              "(make run) so the Pusher creates it, or pass --model-base-path", file=sys.stderr)
        return 2
    if args.prediction_table and not args.lookup_key:
        try:
            args.lookup_key = hybrid.read_meta(args.prediction_table).key
        except hybrid.HybridError as e:
            print(f"serving.server: {e}; pass --lookup-key FIELD to take keys before the "
                  "table exists", file=sys.stderr)
            return 2
    log_file = quiet.command_log(defaults.output_root, "server")
    print(f"serving.server: logs in {log_file}", flush=True)
    print(f"serving.server: {'read-only' if args.read_only else writes.describe()}",
          flush=True)
    with quiet.routed(log_file, level, own=("serving",),
                      own_format="%(asctime)s %(levelname)s %(message)s"):
        repository = ModelRepository(args.model_name, args.model_base_path, args.config_dir,
                                     args.poll_seconds, args.prediction_table,
                                     args.lookup_key, defaults.control_dir)
        server = LocalModelServer((args.host, args.port), repository,
                                  RequestLog(args.request_log or None, args.log_sample_rate),
                                  max_batch=args.max_batch,
                                  max_body_bytes=body_limits.max_bytes(args),
                                  write_auth=writes,
                                  read_only=args.read_only,
                                  request_timeout=args.request_timeout,
                                  max_connections=args.max_connections)
        repository.start()
        log.info("REST API at %s/v1/models/%s", server.url, args.model_name)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            repository.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
