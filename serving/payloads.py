"""Requests and responses in TF Serving's formats, to and from a signature's tensors.

One codec for everyone who talks to the model: the local REST server decodes with it, the
client encodes with it (REST JSON and gRPC PredictRequest), and the safe-to-serve step
writes TF Serving warmup records with it. Formats follow TF Serving's REST API
(https://www.tensorflow.org/tfx/serving/api_rest): row `instances` or columnar `inputs`;
`{"b64": ...}` for binary strings; NaN for an absent number (TF Serving's JSON parser
accepts NaN, and the project's raw signature reads NaN as "absent").

Requests to the raw signature are read by the raw-row contract (models/contract.py): an
optional feature may be left out or sent as null, "" or NaN; what the contract refuses is a
400 naming the feature and value. Other signatures take exactly their tensors.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

import models  # noqa: F401  (Keras 2 before TensorFlow)
from models import contract
from models import features as F
from models import model as M

RAW_SIGNATURE = "serving_default"


class RequestError(ValueError):
    """A request the model cannot answer: HTTP 400 with this message."""


class TooLarge(RequestError):
    """More examples than the server takes in one request: HTTP 413."""


_MISSING_FEATURE = re.compile(r"Feature: (?P<name>\S+) \(data type: (?P<dtype>\w+)\) is required "
                              r"but could not be found")
_CHECK = re.compile(r"^(?P<what>.*?) : Tensor had (?:NaN|Inf|NaN and Inf) values$")


def model_error(error: Exception) -> str:
    """What the model's graph said when it refused an input, in the contract's words: the
    cause (the feature and the rule), without TensorFlow's frames and node names, whole."""
    text = getattr(error, "message", None) or str(error)
    said = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("Graph execution error", "Detected at node", "File ",
                                        "Traceback", "[[", "<stack traces unavailable>")):
            continue
        line = re.sub(r"\s*\[\[\{\{node .*?\}\}\]\]", "", line)
        line = re.sub(r"\s*\[Op:[^\]]*\]", "", line).strip()
        missing = _MISSING_FEATURE.search(line)
        if missing:
            line = (f"a tf.Example has no feature {missing['name']!r} ({missing['dtype']}), "
                    "which this signature reads")
        check = _CHECK.match(line)
        if check:
            line = check["what"]
        if line and line not in said:
            said.append(line)
    return "; ".join(said)[:2000] or type(error).__name__


def _check_batch(size: int, max_batch: int) -> None:
    if size > max_batch:
        raise TooLarge(f"batch of {size:,} examples exceeds this server's limit of "
                       f"{max_batch:,} (--max-batch); split the request or raise the limit")


# ---------------------------------------------------------------- rows -> values


# Where TF Serving looks for warmup requests inside a SavedModel version directory.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

def encode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A raw feature dict -> one REST instance (models.model.raw_instance, the encoding the
    model's own tests and exports use); a row it cannot encode is a bad request."""
    try:
        return M.raw_instance(dict(row))
    except ValueError as e:
        raise RequestError(str(e)) from None


def example_to_row(serialized: bytes) -> dict[str, Any]:
    """A tf.Example (as ExampleGen writes it) -> a raw feature dict of its serving features."""
    example = tf.train.Example.FromString(serialized)
    row: dict[str, Any] = {}
    for feature in F.SERVING_FEATURES:
        values = example.features.feature.get(feature.name)
        kind = values.WhichOneof("kind") if values is not None else None
        listed = list(getattr(values, kind).value) if kind else []
        value = listed[0] if listed else None
        row[feature.name] = value.decode() if isinstance(value, bytes) else value
    return row


# ---------------------------------------------------------------- JSON -> tensors


def input_specs(signature) -> dict[str, tf.TensorSpec]:
    return dict(signature.structured_input_signature[1])


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _b64(value: dict, what: str) -> bytes:
    """TF Serving's {"b64": ...} for binary strings."""
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError):
        raise RequestError(f"{what} has invalid base64") from None


def _tensor(name: str, values: Sequence[Any], spec: tf.TensorSpec, where: str) -> tf.Tensor:
    if spec.dtype == tf.string:
        out = []
        for i, value in enumerate(values):
            if _is_b64(value):
                out.append(_b64(value, f"{where(i)}: input {name!r}"))
            elif isinstance(value, str):
                out.append(value.encode())
            else:
                raise RequestError(f"{where(i)}: input {name!r} expects a string, "
                                   f"got {json_type(value)} {value!r}")
        return tf.constant(out, tf.string)
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            hint = " (send NaN for an absent number)" if value is None else ""
            raise RequestError(f"{where(i)}: input {name!r} expects a number, "
                               f"got {json_type(value)} {value!r}{hint}")
    if spec.dtype.is_integer and any(not float(v).is_integer() for v in values):
        raise RequestError(f"input {name!r} expects integers")
    return tf.constant(np.asarray(values, dtype=spec.dtype.as_numpy_dtype), spec.dtype)


def json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def decode_predict(body: Any, signature, max_batch: int) -> tuple[dict[str, tf.Tensor], bool]:
    """A parsed :predict body -> (input tensors, row format?). Raises RequestError."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("request must have exactly one of 'instances' (row format) or "
                           "'inputs' (columnar format)")
    specs = input_specs(signature)
    names = sorted(specs)
    if set(names) == {f.name for f in F.SERVING_FEATURES}:
        return _decode_raw(body, max_batch)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise RequestError("'instances' must be a list")
        if not instances:
            raise RequestError("'instances' is empty: nothing to predict")
        _check_batch(len(instances), max_batch)
        if len(names) == 1 and not all(isinstance(i, dict) for i in instances):
            instances = [{names[0]: i} for i in instances]
        columns: dict[str, list] = {n: [] for n in names}
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(f"instance {i} must be an object of named inputs, got "
                                   f"{json_type(instance)}")
            missing = [n for n in names if n not in instance]
            extra = sorted(set(instance) - set(names))
            if missing:
                raise RequestError(f"instance {i} is missing input(s) {missing}")
            if extra:
                raise RequestError(f"instance {i} has unknown input(s) {extra}; the signature "
                                   f"takes {names}")
            for n in names:
                columns[n].append(instance[n])
        tensors = {n: _tensor(n, columns[n], specs[n], lambda i: f"instance {i}")
                   for n in names}
        return tensors, True
    inputs = body["inputs"]
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise RequestError(f"'inputs' must be an object of named inputs {names}")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    extra = sorted(set(inputs) - set(names))
    if missing or extra:
        raise RequestError(f"'inputs' is missing {missing} / has unknown {extra}; the "
                           f"signature takes {names}")
    lengths = set()
    tensors = {}
    for n in names:
        column = inputs[n]
        if not isinstance(column, list):
            raise RequestError(f"input {n!r} must be a list (one value per example)")
        lengths.add(len(column))
        tensors[n] = _tensor(n, column, specs[n], lambda i, n=n: f"input {n!r} value {i}")
    if len(lengths) != 1:
        raise RequestError(f"inputs have different lengths {sorted(lengths)}")
    size = lengths.pop()
    if size == 0:
        raise RequestError("'inputs' are empty: nothing to predict")
    _check_batch(size, max_batch)
    return tensors, False


def decode_raw_predict(body: Any, max_batch: int) -> tuple[dict[str, tf.Tensor], bool]:
    """A :predict body for the raw signature, checked by the contract, without a model: what
    the constant fallback of a paused server answers (and logs)."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise RequestError("request body must be a JSON object with exactly one of "
                           "'instances' (row format) or 'inputs' (columnar format)")
    if body.get("signature_name") not in (None, "", RAW_SIGNATURE):
        raise RequestError(f"while serving is paused with a constant, only the "
                           f"{RAW_SIGNATURE!r} signature is answered")
    return _decode_raw(body, max_batch)


def _decode_raw(body: dict, max_batch: int) -> tuple[dict[str, tf.Tensor], bool]:
    """The raw signature's request, row or columnar, through the raw-row contract."""
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise RequestError("'instances' must be a list")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(f"instance {i} must be an object of named inputs, got "
                                   f"{json_type(row)}")
        where = "instance {}: ".format
        row_format = True
    else:
        columns = body["inputs"]
        if not isinstance(columns, dict):
            raise RequestError("'inputs' must be an object of named inputs, one list each")
        for name, column in columns.items():
            if not isinstance(column, list):
                raise RequestError(f"input {name!r} must be a list (one value per example)")
        lengths = {len(column) for column in columns.values()}
        if len(lengths) > 1:
            raise RequestError(f"inputs have different lengths {sorted(lengths)}")
        size = lengths.pop() if lengths else 0
        rows = [{name: column[i] for name, column in columns.items()} for i in range(size)]
        where = "example {}: ".format
        row_format = False
    if not rows:
        raise RequestError("the request has no examples: nothing to predict")
    _check_batch(len(rows), max_batch)
    try:
        instances = [contract.instance(  # the contract reads b64 strings as bytes
            {name: _b64(value, f"{where(i)}{name!r}") if _is_b64(value) else value
             for name, value in row.items()}, where=where(i)) for i, row in enumerate(rows)]
    except contract.ContractError as e:
        raise RequestError(str(e)) from None
    return M.instance_tensors(instances), row_format


def rows_of(inputs: Mapping[str, tf.Tensor]) -> list[dict[str, Any]]:
    """The raw signature's input tensors as one dict of plain values per row."""
    columns = {name: _json_values(tensor.numpy().tolist()) for name, tensor in inputs.items()}
    size = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(size)]


def _json_values(value: Any) -> Any:
    """String outputs (a multiclass model's class names) as text, as TF Serving writes
    them: JSON has no bytes."""
    if isinstance(value, list):
        return [_json_values(v) for v in value]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def encode_predictions(outputs: Mapping[str, tf.Tensor], row_format: bool) -> dict[str, Any]:
    """Signature outputs -> TF Serving's response: bare values when there is one output."""
    values = {k: _json_values(v.numpy().tolist()) for k, v in outputs.items()}
    for name, column in values.items():  # a model exported without the graph's guard
        bad = [i for i, v in enumerate(np.ravel(column))
               if isinstance(v, float) and not np.isfinite(v)]
        if bad:
            raise RequestError(f"the model produced a non-finite {name} for example(s) "
                               f"{bad[:10]}; nothing is returned for this request")
    if row_format:
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        size = len(next(iter(values.values())))
        return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(size)]}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


# ---------------------------------------------------------------- gRPC and warmup


def predict_request(rows: Sequence[Mapping[str, Any]], model_name: str,
                    version: int | None = None, label: str | None = None
                    ) -> predict_pb2.PredictRequest:
    """Raw rows -> a gRPC PredictRequest for the raw signature (TensorProtos per feature)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = RAW_SIGNATURE
    if version is not None:
        request.model_spec.version.value = int(version)
    elif label:
        request.model_spec.version_label = label
    instances = [encode_row(r) for r in rows]
    for feature in F.SERVING_FEATURES:
        column = [i[feature.name] for i in instances]
        if feature.dtype == "string":
            proto = tf.make_tensor_proto([v.encode() for v in column], dtype=tf.string)
        else:
            proto = tf.make_tensor_proto(np.asarray(column, np.float64), dtype=tf.float64)
        request.inputs[feature.name].CopyFrom(proto)
    return request


def request_tensors(request: predict_pb2.PredictRequest) -> dict[str, tf.Tensor]:
    """What a model server hands the signature for this request."""
    return {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}


def warmup_records(rows: Sequence[Mapping[str, Any]], model_name: str) -> list[bytes]:
    """One single-row PredictionLog per row: TF Serving's assets.extra warmup format."""
    records = []
    for row in rows:
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(predict_request([row], model_name))
        records.append(log.SerializeToString())
    return records


def read_warmup(path: str) -> list[predict_pb2.PredictRequest]:
    requests = []
    for record in tf.data.TFRecordDataset([path]):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests


def warmup_calls(model, path: str) -> list[tuple]:
    """(signature, input tensors) for each warmup record: what TF Serving replays on load."""
    return [(model.signatures[r.model_spec.signature_name or RAW_SIGNATURE], request_tensors(r))
            for r in read_warmup(path)]
