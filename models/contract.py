"""The contract for a raw row: what every path that scores raw values takes and refuses.

Derived from the active problem's schema (its SERVING environment and domains) and its
features (models/problem.py); enforced the same way by the REST server, serving.client,
serving.batch_predict, the TFLite example and SafeToServe's probe (all through `instance`),
and in part by the exported graph itself (models/model.py: required values, non-finite
numbers, non-finite probabilities), so that TF Serving cannot answer what this refuses.

- An optional feature may be left out, or be null/None, "" or NaN: all mean absent.
- A required feature (fixed-length in the SERVING spec: present in every training example)
  that is absent, null, "" or NaN is refused, naming it: it is never imputed.
- A number must be finite, fit a 32-bit float (what the graph computes in), be an integer
  where the schema says INT, and lie in the schema's domain (min/max). Strings outside a
  string domain are taken: the vocabulary's out-of-vocabulary buckets are built for them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models import features as F

FLOAT32_MAX = 3.4028234663852886e38


def known() -> frozenset[str]:
    """Columns a raw row may carry: the features, the data's unused columns and the label's."""
    problem = F.PROBLEM
    return frozenset(problem.by_name) | frozenset(problem.unused) | \
        frozenset(problem.label.columns())


class ContractError(ValueError):
    """A row the model must not score; the message names the feature and the value."""


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str  # "string" | "float" | "int"
    required: bool
    minimum: float | None = None
    maximum: float | None = None


def fields() -> tuple[Field, ...]:
    """Every serving feature of the active problem with its presence and domain, from its
    schema file."""
    return _fields(str(F.SCHEMA_FILE), F.SERVING_FEATURES)


@functools.lru_cache(maxsize=8)
def _fields(schema_file: str, features: tuple) -> tuple[Field, ...]:
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from models.problem import read_text

    schema = text_format.Parse(read_text(schema_file), schema_pb2.Schema())
    by_name = {f.name: f for f in schema.feature}
    out = []
    for feature in features:
        proto = by_name[feature.name]
        domain = proto.float_domain if proto.HasField("float_domain") else \
            proto.int_domain if proto.HasField("int_domain") else None
        out.append(Field(
            name=feature.name, dtype=feature.dtype,
            # Fixed shape + every example: parsed dense, so a value must be there.
            required=proto.HasField("shape") and proto.presence.min_fraction >= 1.0,
            minimum=_bound(domain, "min"), maximum=_bound(domain, "max")))
    return tuple(out)


def _bound(domain, name: str) -> float | None:
    """A domain bound as written in the schema (its proto holds 41.4 as a 32-bit float)."""
    if domain is None or not domain.HasField(name):
        return None
    return float(f"{getattr(domain, name):.7g}")


def required() -> list[str]:
    return [f.name for f in fields() if f.required]


def _absent(value: Any) -> bool:
    return value is None or value == "" or \
        (isinstance(value, float) and math.isnan(value))


def _number(field: Field, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ContractError(f"{where}{field.name!r} expects a number, got "
                            f"{type(value).__name__} {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ContractError(f"{where}{field.name!r}: {value!r} is not a number") from None
    if math.isnan(number):
        return number  # "NaN" written as text: absent, judged by the caller
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise ContractError(f"{where}{field.name!r}: {value!r} is not a finite number the "
                            "model can compute with (32-bit float)")
    if field.dtype == "int" and not number.is_integer():
        raise ContractError(f"{where}{field.name!r} expects an integer, got {value!r}")
    if field.minimum is not None and number < field.minimum:
        raise ContractError(f"{where}{field.name!r}: {value!r} is below the schema's "
                            f"minimum {field.minimum:g}")
    if field.maximum is not None and number > field.maximum:
        raise ContractError(f"{where}{field.name!r}: {value!r} is above the schema's "
                            f"maximum {field.maximum:g}")
    return number


def _describe_absent(row: Mapping[str, Any], name: str) -> str:
    if name not in row:
        return "left out"
    given = row[name]
    return "null" if given is None else "empty" if isinstance(given, str) and given == "" \
        else repr(given)


def value(field: Field, row: Mapping[str, Any], where: str = "") -> Any:
    """The signature's value for one feature of `row` ("" or NaN when absent), or
    ContractError. The rules of the module docstring, for one value."""
    raw = row.get(field.name)
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ContractError(f"{where}{field.name!r}: {raw!r} is not UTF-8") from None
    if not _absent(raw) and field.dtype != "string":
        raw = _number(field, raw, where)
    if _absent(raw):
        if field.required:
            given = _describe_absent(row, field.name)
            raise ContractError(f"{where}{field.name!r} is required: it was {given}, and "
                                "the model never guesses a required value")
        return "" if field.dtype == "string" else math.nan
    if field.dtype == "string" and not isinstance(raw, str):
        raise ContractError(f"{where}{field.name!r} expects a string, got "
                            f"{type(raw).__name__} {raw!r}")
    return raw


def instance(row: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """A raw row (JSON values, CSV strings, pandas values, bytes) -> the values
    `serving_default` takes: every serving feature, strings as str ("" = absent), numbers
    as float (NaN = absent). `where` prefixes messages (e.g. "instance 3: ")."""
    unknown = sorted(set(row) - known())
    if unknown:
        raise ContractError(f"{where}unknown feature(s) {unknown}; the model takes "
                            f"{[f.name for f in F.SERVING_FEATURES]}")
    return {field.name: value(field, row, where) for field in fields()}
