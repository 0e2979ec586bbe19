"""The stream's steps: each event through the raw-row contract, the model the rollout says
answers, the warehouse rows and the window figures; the DoFns, RunInference's model handler
and the CombineFn that both the Beam job (serving/stream.py, Pub/Sub on Dataflow) and the
local folder loop (serving/folder_stream.py) run, so both score, write and count alike."""

from __future__ import annotations

import collections
import datetime
import fcntl
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.transforms import window

from models import contract
from models import problem as P
from serving import answering

log = logging.getLogger("serving.stream")

TALLY = "events.tally"
NAMESPACE = "stream"
DEAD = "dead_letters"
VALID = "valid"


# ---------------------------------------------------------------- events in


def parse_time(value: Any) -> float:
    """UNIX seconds from an ISO 8601 time (UTC unless it names a zone) or from a number."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a time")
        return float(value)
    text = str(value).strip()
    try:  # UNIX seconds as text: what a CSV cell holds
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return parse_time(number)
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


class ParseEvent(beam.DoFn):
    """An event (a JSON text, or a CSV row as a dict) -> the model's inputs at its event time,
    or a dead letter with the reason."""

    def __init__(self, key_field: str = "key", time_field: str = "event_time",
                 tally: str = "", problem_dir: str = ""):
        self.key_field, self.time_field, self.tally = key_field, time_field, tally
        self.problem_dir = problem_dir  # the contract the served model carries
        self.events = beam.metrics.Metrics.counter(NAMESPACE, "events")
        self.dead = beam.metrics.Metrics.counter(NAMESPACE, "dead_letters")

    def setup(self):
        if self.problem_dir:  # on every worker: the rows are read by the model's contract
            P.adopt(P.load(self.problem_dir))

    def start_bundle(self):
        self.seen = 0

    def finish_bundle(self):
        """Locally, the events read are also tallied in a file: the count that the sinks'
        predictions and dead letters must add up to."""
        if self.tally and self.seen:
            _append(self.tally, [json.dumps({"events": self.seen})])

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam):
        self.events.inc()
        self.seen += 1
        arrived = float(timestamp) if timestamp is not None and \
            timestamp != window.MIN_TIMESTAMP else time.time()
        raw = element if isinstance(element, str) else json.dumps(element)
        try:
            event = json.loads(element) if isinstance(element, (str, bytes)) else dict(element)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            yield self._dead(raw, f"malformed JSON: {e}", arrived)
            return
        if not isinstance(event, dict):
            yield self._dead(raw, "an event must be a JSON object", arrived)
            return
        envelope = {self.key_field, self.time_field}
        features = event.get("features") if isinstance(event.get("features"), dict) else \
            {k: v for k, v in event.items() if k not in envelope}
        try:
            when = parse_time(event[self.time_field]) if event.get(self.time_field) not in \
                (None, "") else arrived
        except (ValueError, TypeError) as e:
            yield self._dead(raw, f"{self.time_field}: {e}", arrived)
            return
        try:
            inputs = contract.instance(features)
        except contract.ContractError as e:
            yield self._dead(raw, str(e), when)
            return
        key = event.get(self.key_field)
        yield window.TimestampedValue({"key": None if key in (None, "") else str(key),
                                       "event_time": when, "features": features,
                                       "instance": inputs}, when)

    def _dead(self, raw: str, reason: str, when: float):
        self.dead.inc()
        return beam.pvalue.TaggedOutput(DEAD, window.TimestampedValue(
            {"event": raw, "reason": reason, "event_time": when}, when))


def _append(path: str, lines: list[str]) -> None:
    """Lines appended under a lock: several bundles (threads, processes) write one file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("\n".join(lines) + "\n")
        fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- the model


class RolloutVersions:
    """The version the rollout says answers (serving/answering.py: the rule the server and
    the router follow: a pause's fallback, the bandit, the canary, `stable`, else the newest
    pushed), decided once per bundle from one snapshot of the rollout state, read again
    every `poll_seconds`. Each version is loaded whole (warmup replayed) before it answers;
    one that fails to load is never replaced by another under its name: its rows are
    refused with the reason."""

    def __init__(self, serving_dir: str, poll_seconds: float, config_dir: str = "",
                 seed: int | None = None):
        self.serving_dir, self.poll_seconds = serving_dir, poll_seconds
        self.config_dir = config_dir
        self.snapshot = answering.Snapshot()
        self.pushed: list[int] = []
        self.loaded: dict[int, Any] = {}  # version -> serving signature
        self.failed: dict[int, str] = {}  # version -> why it did not load
        self.rng = random.Random(seed)
        self._checked = -math.inf
        self.version_known = False  # a state was read: a later failed read keeps it
        self._refresh()
        if not self.pushed:
            raise FileNotFoundError(f"no pushed model version under {serving_dir}: run the "
                                    "pipeline so the Pusher pushes one")

    @property
    def pause(self):
        return self.snapshot.pause

    def current(self) -> tuple[answering.Answer, Any]:
        """(who answers this bundle, its signature or None)."""
        now = time.monotonic()
        if now - self._checked >= self.poll_seconds:
            self._checked = now
            self._refresh()
        answer = answering.choose(self.snapshot, self.pushed, self.rng)
        if answer.version is None:
            return answer, None
        signature = self._signature(answer.version)
        if signature is None:
            return answering.Answer(None, answer.route, refusal=(
                f"version {answer.version} ({answer.route}) did not load: "
                f"{self.failed.get(answer.version, 'unknown error')}")), None
        return answer, signature

    def _refresh(self) -> None:
        from serving import versions

        try:
            snapshot = answering.Snapshot.read(self.config_dir)
        except Exception as e:  # noqa: BLE001 - unreadable is not "not paused"
            if self.version_known:
                log.error("stream: the rollout state at %s could not be read; answering by "
                          "the state read before: %s", self.config_dir, e)
                return
            raise
        self.version_known = True
        if snapshot.pause != self.snapshot.pause:
            log.warning("stream: %s", f"PAUSED, {snapshot.pause.fallback} answers: "
                        f"{snapshot.pause.reason}" if snapshot.pause else "resumed")
        self.snapshot = snapshot
        self.pushed = versions.pushed_versions(self.serving_dir)

    def _signature(self, version: int):
        if version in self.loaded:
            return self.loaded[version]
        if version in self.failed:
            return None
        import tensorflow as tf

        from serving import payloads, versions

        path = versions.version_dir(self.serving_dir, version)
        try:
            problem = P.from_model(str(path))  # the contract it was trained under
            P.adopt(problem)
            model = tf.saved_model.load(path)
            signature = model.signatures[payloads.RAW_SIGNATURE]
            warmup = f"{path}/{payloads.WARMUP_FILE}"
            if tf.io.gfile.exists(warmup):
                for call, tensors in payloads.warmup_calls(model, warmup):
                    call(**tensors)
        except Exception as e:  # noqa: BLE001 - said with every row it would have scored
            self.failed[version] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            log.error("version %s under %s did not load: %s", version, self.serving_dir,
                      self.failed[version])
            return None
        log.info("streaming with version %s", version)
        signature._model = model  # keeps the model's variables alive with its signature
        self.loaded[version] = signature
        return signature


class RawRowsModelHandler(ModelHandler[dict, PredictionResult, RolloutVersions]):
    """RunInference's handler for the raw-feature signature: a batch of contract-checked
    rows -> one call with a tensor per feature -> P(big tipper) per row, with the version."""

    def __init__(self, serving_dir: str, poll_seconds: float = 10.0, max_batch: int = 256,
                 config_dir: str = ""):
        super().__init__()
        self.serving_dir, self.poll_seconds, self.max_batch = serving_dir, poll_seconds, \
            max_batch
        self.config_dir = config_dir

    def load_model(self) -> RolloutVersions:
        return RolloutVersions(self.serving_dir, self.poll_seconds, self.config_dir)

    def run_inference(self, batch: Sequence[dict], model: RolloutVersions,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        """The answering version's probabilities, said in `model_id` (`3;stable`,
        `2;canary`, `3;paused`, `constant;paused`); rows no model may answer (a refusing
        pause, a fallback that did not load) carry the reason and become dead letters."""
        from models import model as M

        answer, signature = model.current()
        paused = model.pause
        marked = ({"paused": paused.log_field()} if paused else {})
        if signature is None:
            value = answer.constant
            refusing = paused is not None and paused.fallback == "refuse"  # said as a pause
            reason = {"refused": answer.refusal} if answer.refusal and not refusing else {}
            return [PredictionResult({**e, **marked, **reason}, value, answer.route)
                    for e in batch]
        outputs = signature(**M.instance_tensors([e["instance"] for e in batch]))
        probabilities = outputs[M.PROBABILITY].numpy().reshape(-1)
        route = answer.route if answer.paused else f"{answer.version};{answer.route}"
        return [PredictionResult({**e, **marked}, float(p), route)
                for e, p in zip(batch, probabilities, strict=True)]

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.max_batch}

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class PredictionRows(beam.DoFn):
    """One warehouse row per event: its inputs as sent, the probability, the version that
    scored it (or the pause's fallback), when it happened and when it was scored. An event a
    paused model refuses is a dead letter, with the pause's reason."""

    def process(self, result: PredictionResult):
        event = result.example
        paused = event.get("paused")
        if result.inference is None:
            beam.metrics.Metrics.counter(NAMESPACE, "dead_letters").inc()
            yield beam.pvalue.TaggedOutput(DEAD, {
                "event": json.dumps({"key": event["key"], **event["features"]}, default=str),
                "reason": event.get("refused") or f"serving is paused: {paused['reason']}",
                "event_time": event["event_time"]})
            return
        beam.metrics.Metrics.counter(NAMESPACE, "predictions").inc()
        version = result.model_id.split(";")[0]
        yield {"key": event["key"], "event_time": event["event_time"],
               "processing_time": time.time(),
               "version": int(version) if version.isdigit() else None,
               "paused": paused["fallback"] if paused else "",
               "probability": result.inference,
               "features": json.dumps(event["features"], sort_keys=True, default=str)}


# ---------------------------------------------------------------- out


class WindowedFiles(beam.DoFn):
    """Each bundle's elements as one file per window: FOLDER/window=START/part-ID.EXT,
    Parquet or JSONL (a file is written whole, under a temporary name, then renamed)."""

    def __init__(self, folder: str, kind: str):
        self.folder, self.kind = folder, kind

    def start_bundle(self):
        self.buffer = collections.defaultdict(list)

    def process(self, element: dict, w=beam.DoFn.WindowParam):
        start = w.start.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ") \
            if hasattr(w, "start") else "global"
        self.buffer[start].append(element)

    def finish_bundle(self):
        for start, rows in self.buffer.items():
            folder = Path(self.folder) / f"window={start}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{uuid.uuid4().hex[:12]}.{self.kind}"
            tmp = folder / f".{name}.partial"
            if self.kind == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(rows), tmp)
            else:
                tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
            tmp.rename(folder / name)


class AppendRequestLog(beam.DoFn):
    """The predictions in the request log's format (serving/request_log.py), appended under
    a lock: `python -m monitoring.monitor --log` reads streamed traffic as it reads served."""

    def __init__(self, path: str, model_name: str):
        self.path, self.model_name = path, model_name

    def start_bundle(self):
        self.lines = []

    def process(self, row: dict):
        record = {"time": row["processing_time"], "event_time": row["event_time"],
                  "model": self.model_name, "version": row["version"], "route": "stream",
                  "signature": "serving_default", "features": json.loads(row["features"]),
                  "prediction": row["probability"]}
        if row["paused"]:  # the monitor leaves these out
            record["paused"] = {"fallback": row["paused"]}
        if row["key"] is not None:
            record["key"] = row["key"]
        self.lines.append(json.dumps(record))

    def finish_bundle(self):
        if self.lines:
            _append(self.path, self.lines)


class WindowFigures(beam.CombineFn):
    """(events, predictions, dead letters, sum of probabilities) of a window."""

    def create_accumulator(self):
        return [0, 0, 0, 0.0]

    def add_input(self, acc, item):
        kind, probability = item
        acc[0] += 1
        if kind == "prediction":
            acc[1] += 1
            acc[3] += probability
        else:
            acc[2] += 1
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out = [a + b for a, b in zip(out, acc, strict=True)]
        return out

    def extract_output(self, acc):
        events, predictions, dead, total = acc
        return {"events": events, "predictions": predictions, "dead_letters": dead,
                "mean_prediction": total / predictions if predictions else None,
                "dead_letter_share": dead / events if events else 0.0}


class AppendWindowLine(beam.DoFn):
    def __init__(self, path: str):
        self.path = path

    def process(self, figures: dict, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        line = {"window_start": float(w.start), "window_end": float(w.end),
                "timing": {0: "early", 1: "on_time", 2: "late"}.get(pane.timing, "unknown"),
                "pane": pane.index, **figures}
        _append(self.path, [json.dumps(line)])
        yield line


@dataclass(frozen=True)
class StreamSettings:
    serving_dir: str
    model_name: str = "taxi-big-tipper"
    window_seconds: int = 60
    allowed_lateness_seconds: int = 300
    poll_seconds: float = 10.0
    key_field: str = "key"
    time_field: str = "event_time"
    max_batch: int = 256
    config_dir: str = ""  # serving.rollout's: a pause there is honoured


def served_problem_dir(serving_dir: str) -> str:
    """Where the newest pushed model keeps its problem (the contract events are read by),
    or "" for a model exported before the problem travelled with it."""
    from serving import versions

    newest = versions.newest_version(serving_dir)
    if newest is None or P.from_model(versions.version_dir(serving_dir, newest)) is None:
        return ""
    return f"{versions.version_dir(serving_dir, newest)}/{P.MODEL_PROBLEM_DIR}"
