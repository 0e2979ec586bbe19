"""What a run did, read back from MLMD (or from a running DAG's artifacts): each component
ran or was cached and how long it took, anomalies, drift, metrics against the baseline,
blessed or not, and which version was pushed where. The text a person reads is built on it
in runs.py, the HTML report in report.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from reporting import artifacts as files

log = logging.getLogger(__name__)

STATE = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "FAILED",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


@dataclasses.dataclass
class ComponentRun:
    node_id: str
    state: str
    seconds: float
    execution_id: int


@dataclasses.dataclass
class RunSummary:
    pipeline_name: str
    run_id: str
    components: list[ComponentRun]
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    baseline_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    validation_failures: list[str] = dataclasses.field(default_factory=list)
    safe_to_serve: bool | None = None
    safe_to_serve_detail: str = ""  # the figures when it passed, the reasons when not
    pushed: bool | None = None
    pushed_destination: str = ""
    approval: dict[str, str] = dataclasses.field(default_factory=dict)  # --require-approval
    evaluation_uri: str = ""
    # node -> artifact type -> uri, of what this run's executions output
    artifacts: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    data_source: dict[str, Any] = dataclasses.field(default_factory=dict)  # input_base, span
    eval_config: str = ""  # the Evaluator's EvalConfig (JSON): the thresholds that decided
    report_path: str = ""  # the HTML run report, once written
    drift: dict[str, Any] = dataclasses.field(default_factory=dict)  # DriftCheck's drift.json
    window_spans: list[int] = dataclasses.field(default_factory=list)  # newest first
    batch_predictions: dict[str, Any] = dataclasses.field(default_factory=dict)  # rows, file
    edge_model: dict[str, Any] = dataclasses.field(default_factory=dict)  # EdgeExport's check
    split: dict[str, Any] = dataclasses.field(default_factory=dict)  # how train/eval were cut
    leakage: dict[str, Any] = dataclasses.field(default_factory=dict)  # LeakageCheck's findings
    # SpanWindow's contamination.json: the marks honoured and the rows each left out
    contamination: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The Trainer's AUC on the share of the training period it held out (a random split).
    in_time_holdout: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The metrics on the rows whose label is observed (the problem's label.observed slice).
    observed_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    # RefitCheck's refit.json: the evaluated model, the refit, the guards, what went on.
    refit: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def wall_seconds(self) -> float:
        return sum(c.seconds for c in self.components)


def connect(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _existing_store(metadata_path: str) -> metadata_store.MetadataStore:
    """The MLMD store of tools that read the latest outputs; a missing file is an error
    that says what to do."""
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no MLMD at {metadata_path}: run the pipeline first (make run)")
    return connect(metadata_path)


def newest_output(metadata_path: str, node: str, type_name: str) -> str:
    """URI of the newest `type_name` artifact `node` wrote, in any run (for tools that work
    on the latest outputs: ablation, benchmarks)."""
    found = [a for a in _existing_store(metadata_path).get_artifacts_by_type(type_name)
             if f"/{node}/" in a.uri]
    if not found:
        raise FileNotFoundError(f"no {type_name} from {node} in {metadata_path}")
    return max(found, key=lambda a: a.id).uri


def newest_inputs(metadata_path: str, node: str, type_names: tuple[str, ...]) -> tuple[str, ...]:
    """URIs of one artifact of each of `type_names` that the newest execution of `node` read
    (e.g. the rows and the Transform graph the latest Trainer trained on): the inputs of
    one execution belong together, where each type's newest output might not."""
    store = _existing_store(metadata_path)
    contexts = [c for c in store.get_contexts_by_type("node") if c.name.endswith(f".{node}")]
    executions = sorted((e for c in contexts for e in store.get_executions_by_context(c.id)),
                        key=lambda e: e.id, reverse=True)
    types = {t.id: t.name for t in store.get_artifact_types()}
    for execution in executions:
        ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
               if e.type == metadata_store_pb2.Event.INPUT]
        by_type = {types[a.type_id]: a.uri for a in store.get_artifacts_by_id(ids)}
        if all(name in by_type for name in type_names):
            return tuple(by_type[name] for name in type_names)
    raise FileNotFoundError(f"no {node} run with inputs {', '.join(type_names)} in "
                            f"{metadata_path}")


def pipeline_runs(store: metadata_store.MetadataStore, pipeline_name: str) -> list:
    """pipeline_run contexts of this pipeline, oldest first."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return []
    runs = [c for c in store.get_children_contexts_by_context(pipeline.id)
            if c.type == "pipeline_run"]
    return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))


OLD_NODE_IDS = {"CsvExampleGen": "ExampleGen"}  # runs recorded before the node was renamed


def _node_id(store, execution_id: int, pipeline_name: str) -> str:
    for context in store.get_contexts_by_execution(execution_id):
        if context.type == "node":
            node = context.name.removeprefix(f"{pipeline_name}.")
            return OLD_NODE_IDS.get(node, node)
    return "?"


def _artifacts_out(store, execution_id: int) -> list:
    events = store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events if e.type in (metadata_store_pb2.Event.OUTPUT,)]
    return store.get_artifacts_by_id(ids) if ids else []


def _prop(artifact, name: str) -> Any:
    if name in artifact.custom_properties:
        value = artifact.custom_properties[name]
        return value.string_value or value.int_value or value.double_value
    return None


def summarize(metadata_path: str, pipeline_name: str, run_id: str | None = None) -> RunSummary:
    store = connect(metadata_path)
    runs = pipeline_runs(store, pipeline_name)
    if not runs:
        raise LookupError(f"no runs of pipeline {pipeline_name!r} in {metadata_path}")
    run = next((r for r in runs if r.name == run_id), None) if run_id else runs[-1]
    if run is None:
        raise LookupError(f"no run {run_id!r} of {pipeline_name!r}; known: "
                          + ", ".join(r.name for r in runs[-5:]))
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    summary = RunSummary(pipeline_name, run.name, [])
    for execution in executions:
        node = _node_id(store, execution.id, pipeline_name)
        seconds = max(0.0, (execution.last_update_time_since_epoch
                            - execution.create_time_since_epoch) / 1000.0)
        summary.components.append(ComponentRun(
            node, STATE.get(execution.last_known_state, "?"), seconds, execution.id))
        for artifact in _artifacts_out(store, execution.id):
            summary.artifacts.setdefault(node, {})[artifact.type] = artifact.uri
            _read_outcome(summary, node, artifact)
        if node == "ExampleGen":
            summary.data_source = {k: _prop(execution, k) for k in ("input_base", "span")}
        elif node == "Evaluator":
            summary.eval_config = _prop(execution, "eval_config") or ""
    return summary


def latest_execution(metadata_path: str, pipeline_name: str, node: str
                     ) -> tuple[str, RunSummary, list] | None:
    """The newest execution of `node`: its state, what its outputs say (read into a
    summary as for a whole run) and its output artifacts; None before it has one."""
    store = connect(metadata_path)
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node}")
    executions = store.get_executions_by_context(context.id) if context else []
    if not executions:
        return None
    execution = max(executions, key=lambda e: e.id)
    outcome = RunSummary(pipeline_name, "", [])
    artifacts = _artifacts_out(store, execution.id)
    for artifact in artifacts:
        _read_outcome(outcome, node, artifact)
    return STATE.get(execution.last_known_state, "?"), outcome, artifacts


def from_artifacts(pipeline_name: str, run_id: str, by_node: dict[str, list],
                   eval_config: str = "") -> RunSummary:
    """The summary of a run still under way, from the TFX artifacts its nodes produced
    (by node id): what the RunReport component sees on Vertex, where there is no MLMD
    file to read. Component states and times are left empty."""
    summary = RunSummary(pipeline_name, run_id, [], eval_config=eval_config)
    for node, artifacts in by_node.items():
        for artifact in artifacts:
            proto = artifact.mlmd_artifact
            proto.type = artifact.type_name  # set by MLMD queries, not on executor inputs
            summary.artifacts.setdefault(node, {})[artifact.type_name] = artifact.uri
            _read_outcome(summary, node, proto)
            if node == "ExampleGen":
                summary.data_source = {"input_base": artifact.uri,
                                       "span": getattr(artifact, "span", None)}
    return summary


def _read_outcome(summary: RunSummary, node: str, artifact) -> None:
    if node == "Evaluator" and artifact.uri and artifact.type == "ModelEvaluation":
        summary.evaluation_uri = artifact.uri
        _read_metrics(summary, artifact.uri)
    elif node == "Evaluator" and artifact.type == "ModelBlessing":
        summary.blessed = bool(_prop(artifact, "blessed"))
    elif node == "SafeToServe" and artifact.type == "InfraBlessing":
        summary.safe_to_serve = bool(_prop(artifact, "blessed"))
        figures = [f"{label} {_prop(artifact, key):.1f} {unit}"
                   for key, label, unit in (("p50_ms", "p50", "ms"), ("p99_ms", "p99", "ms"),
                                            ("peak_rss_mib", "peak memory", "MiB"))
                   if _prop(artifact, key) is not None]
        summary.safe_to_serve_detail = _prop(artifact, "reason") or ", ".join(figures)
    elif node == "LeakageCheck" and artifact.uri:
        summary.leakage = _read_json(f"{artifact.uri}/{files.LEAKAGE_FILE}") or {}
    elif node == "DriftCheck" and artifact.uri:
        summary.drift = _read_json(f"{artifact.uri}/{files.DRIFT_FILE}") or {}
    elif node == "SpanWindow" and artifact.type == "Examples":
        summary.window_spans = json.loads(_prop(artifact, "spans") or "[]")
        _merge_contamination(summary, artifact.uri)
        summary.split = json.loads(_prop(artifact, "split") or "{}") or summary.split
    elif node in ("ExampleGen", "SpanExamples") and artifact.type == "Examples":
        summary.split = summary.split or json.loads(_prop(artifact, "split") or "{}")
        if node == "SpanExamples":  # this span's marked rows; SpanWindow's: older spans'
            _merge_contamination(summary, artifact.uri)
    elif node == "Trainer" and artifact.type == "ModelRun" and artifact.uri:
        history = _read_json(f"{artifact.uri}/history.json") or {}
        summary.in_time_holdout = history.get("in_time_holdout") or {}
    elif node == "PredictionsExport" and artifact.type == "InferenceResult":
        summary.batch_predictions = _read_json(
            f"{artifact.uri}/{files.PREDICTIONS_SUMMARY_FILE}") or {}
    elif node == "RefitCheck" and artifact.type == "InfraBlessing" and artifact.uri:
        summary.refit = _read_json(f"{artifact.uri}/{files.REFIT_FILE}") or {}
    elif node == "EdgeExport" and artifact.uri:
        summary.edge_model = _read_json(f"{artifact.uri}/{files.EDGE_COMPARISON_FILE}") or {}
    elif node == "Pusher" and artifact.type == "PushedModel":
        summary.pushed = bool(_prop(artifact, "pushed"))
        summary.pushed_destination = _prop(artifact, "pushed_destination") or ""
        summary.approval = {k: _prop(artifact, k) for k in (
            "fingerprint", "awaiting_approval", "rejected", "approved_by")
            if _prop(artifact, k)}


def _merge_contamination(summary: RunSummary, uri: str) -> None:
    found = _read_json_if_there(f"{uri}/{files.CONTAMINATION_FILE}")
    if not found:
        return
    merged = summary.contamination or {"marks": [], "excluded": {}, "rows": 0}
    known = {m["id"] for m in merged["marks"]}
    merged["marks"] += [m for m in found["marks"] if m["id"] not in known]
    for mark_id, rows in found["excluded"].items():
        merged["excluded"][mark_id] = merged["excluded"].get(mark_id, 0) + rows
    merged["rows"] += found["rows"]
    summary.contamination = merged


def _read_json_if_there(path: str) -> Any:
    from tfx.dsl.io import fileio

    return _read_json(path) if fileio.exists(path) else None


def _read_json(path: str) -> Any:
    from tensorflow.errors import OpError
    from tfx.dsl.io import fileio

    try:
        with fileio.open(path) as f:
            return json.load(f)
    except (OSError, ValueError, OpError) as e:  # TF's NotFoundError is an OpError, not an
        log.warning("could not read %s: %s", path, e)  # OSError: a file stock TFX never wrote
        return None


def finished_spans(metadata_path: str, pipeline_name: str) -> dict[int, str]:
    """Spans whose run reached an end, with how it ended ("pushed", "not pushed", "stopped
    by data validation"). A run that crashed half-way has not ended: its span is absent."""
    store = connect(metadata_path)
    ended: dict[int, str] = {}
    for run in pipeline_runs(store, pipeline_name):
        span, outcome = None, None
        for execution in store.get_executions_by_context(run.id):
            node = _node_id(store, execution.id, pipeline_name)
            state = STATE.get(execution.last_known_state)
            if node == "ExampleGen" and state in ("ran", "cached"):
                span = _prop(execution, "span")
            elif node == "AnomalyGate" and state == "FAILED":
                outcome = "stopped by data validation"
            elif node == "Pusher" and state in ("ran", "cached"):
                pushed = any(_prop(a, "pushed") for a in _artifacts_out(store, execution.id))
                outcome = "pushed" if pushed else "not pushed"
        if span is not None and outcome is not None:
            ended[int(span)] = outcome
    return ended


def _read_metrics(summary: RunSummary, uri: str) -> None:
    import tensorflow_model_analysis as tfma

    try:
        from models.features import OBSERVED_SLICE

        for slice_metrics in tfma.load_metrics(uri):
            keys = slice_metrics.slice_key.single_slice_keys
            if len(keys) == 1 and keys[0].column == OBSERVED_SLICE and \
                    keys[0].int64_value == 1:
                for key_and_value in slice_metrics.metric_keys_and_values:
                    key, value = key_and_value.key, key_and_value.value
                    if value.HasField("double_value") and not key.is_diff and \
                            key.model_name != "baseline":
                        summary.observed_metrics[key.name] = value.double_value.value
                continue
            if keys:
                continue  # overall slice only here; slices are in the report
            for key_and_value in slice_metrics.metric_keys_and_values:
                key, value = key_and_value.key, key_and_value.value
                if not value.HasField("double_value"):
                    continue
                target = summary.baseline_metrics if key.model_name == "baseline" else \
                    summary.metrics
                if not key.is_diff:
                    target[key.name] = value.double_value.value
        result = tfma.load_validation_result(uri)
        for per_slice in result.metric_validations_per_slice:
            where = slice_name(per_slice.slice_key)
            for f in per_slice.failures:
                what = "change vs baseline" if f.metric_key.is_diff else "value"
                threshold = " ".join(str(f.metric_threshold).split())
                summary.validation_failures.append(
                    f"{f.metric_key.name} {what} {f.metric_value.double_value.value:+.4f} on "
                    f"{where} fails {threshold}")
    except Exception as e:  # noqa: BLE001 - a summary must not hide the run's own outcome
        log.warning("could not read evaluation at %s: %s", uri, e)


def slice_name(slice_key) -> str:
    """'payment_type=Cash', or 'all data' for the overall slice."""
    parts = []
    for k in slice_key.single_slice_keys:
        value = getattr(k, k.WhichOneof("kind") or "bytes_value")
        value = value.decode() if isinstance(value, bytes) else value
        parts.append(f"{k.column}={value}")
    return ", ".join(parts) or "all data"
