"""The problem a run solves, as data: `problem.yaml` beside its curated `schema.pbtxt`.

Everything that would otherwise hold a problem of its own reads it: the label and the task
(binary, multi-class, regression), the features with their kinds, the time column, the
slices and the blessing's metric and thresholds. The taxi's lives in `schema/`; a new table
gets one from `python -m tools.problem init` (tools/problem.py), reviewed like code. The
machinery (preprocessing, model, evaluation, serving) stays the same for every problem.

Which problem is active: the one a step was handed (Transform and the Trainer receive it
in their custom_config, so a compiled job carries it), else the folder TAXI_PROBLEM_DIR
names, else `schema/`.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from settings.layout import SCHEMA_DIR, SCHEMA_FILE_NAME

PROBLEM_FILE = "problem.yaml"
PROBLEM_DIR_ENV = "TAXI_PROBLEM_DIR"
TASKS = ("binary", "multiclass", "regression")
TIME_FORMATS = ("unix_seconds", "iso8601")


class ProblemError(ValueError):
    """A problem definition that cannot be used; the message names the file and the field."""


class Kind(enum.Enum):
    NUMERIC = "numeric"  # log1p (if skewed) + z-score; missing -> training mean
    GEO = "geo"  # z-score + quantile buckets; missing -> its own bucket
    INT_CATEGORY = "int_category"  # small known integer range; missing/out-of-range -> OOV index
    VOCAB = "vocab"  # vocabulary from data (top_k) + OOV hash buckets; missing -> ''
    HASHED = "hashed"  # many distinct values: hashed into `buckets` buckets, no vocabulary


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    dtype: str  # raw type in the examples: "float", "int" or "string"
    log: bool = False  # NUMERIC: apply log1p before scaling (heavy right tail)
    buckets: int = 0  # GEO: quantile buckets; HASHED: hash buckets
    size: int = 0  # INT_CATEGORY: values 0..size-1 are kept
    top_k: int = 0  # VOCAB: vocabulary size cap
    oov: int = 1  # VOCAB: hash buckets for values outside the vocabulary
    embedding_dim: int = 0  # categorical kinds: width of the learned embedding
    why: str = ""  # the reason for the kind and transform, for the person who reviews it

    @property
    def transformed(self) -> str:
        return transformed_name(self.name)

    @property
    def bucket_name(self) -> str:
        return transformed_name(f"{self.name}_bucket")

    @property
    def categorical(self) -> bool:
        return self.kind in (Kind.INT_CATEGORY, Kind.VOCAB, Kind.HASHED)

    @property
    def cardinality(self) -> int:
        """Number of distinct indices the transformed categorical can take."""
        if self.kind is Kind.INT_CATEGORY:
            return self.size + 1  # + one OOV index for missing or out-of-range values
        if self.kind is Kind.VOCAB:
            return self.top_k + self.oov
        if self.kind is Kind.GEO:
            return self.buckets + 1  # + one bucket for missing coordinates
        if self.kind is Kind.HASHED:
            return self.buckets
        raise ValueError(f"{self.name} is not categorical")


def transformed_name(name: str) -> str:
    return f"{name}_xf"


# ---------------------------------------------------------------- label rules


_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_COMPARE = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==",
            ast.NotEq: "!="}


@dataclass(frozen=True)
class Rule:
    """A label rule over raw columns, e.g. `tips > 0.2 * fare` or `quality >= 7`: numbers,
    column names, + - * /, comparisons, `and`, `or`, `not`, and quoted strings compared
    with a column. An absent number counts as 0 and an absent string as "" (the taxi's
    label: no tip recorded is no tip). Evaluated the same way in the Transform graph and
    on raw rows in Python (the leakage check, the backtest, the monitor)."""

    text: str

    def __post_init__(self) -> None:
        try:
            tree = ast.parse(self.text, mode="eval").body
        except SyntaxError as e:
            raise ProblemError(f"label rule {self.text!r} is not an expression: {e.msg}") from None
        self._check(tree)
        object.__setattr__(self, "_tree", tree)

    def _check(self, node: ast.AST) -> None:
        allowed = (ast.BinOp, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Name, ast.Constant,
                   ast.And, ast.Or, ast.Not, ast.USub, *_BINARY, *_COMPARE, ast.Load)
        if not isinstance(node, allowed):
            raise ProblemError(f"label rule {self.text!r}: {type(node).__name__} is not "
                               "allowed (numbers, columns, + - * /, comparisons, and/or/not)")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
            raise ProblemError(f"label rule {self.text!r}: {node.value!r} is not a number or "
                               "a string")
        if isinstance(node, ast.Compare) and len(node.ops) != 1:
            raise ProblemError(f"label rule {self.text!r}: one comparison at a time "
                               "(write `a < b and b < c`)")
        for child in ast.iter_child_nodes(node):
            self._check(child)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)))

    def string_columns(self) -> set[str]:
        """Columns compared with a quoted string: read as text, the others as numbers."""
        out = set()
        for node in ast.walk(self._tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides):
                    out |= {s.id for s in sides if isinstance(s, ast.Name)}
        return out

    def evaluate(self, columns: Mapping[str, Any], ops: Any) -> Any:
        """The rule over `columns` (arrays or tensors), with `ops` supplying the few
        functions that differ: numpy or TensorFlow (see numpy_ops/tf_ops)."""
        def walk(node):
            if isinstance(node, ast.Name):
                return columns[node.id]
            if isinstance(node, ast.Constant):
                return node.value
            if isinstance(node, ast.UnaryOp):
                value = walk(node.operand)
                return ops.logical_not(value) if isinstance(node.op, ast.Not) else -value
            if isinstance(node, ast.BinOp):
                left, right = walk(node.left), walk(node.right)
                return {"+": lambda: left + right, "-": lambda: left - right,
                        "*": lambda: left * right, "/": lambda: left / right}[
                    _BINARY[type(node.op)]]()
            if isinstance(node, ast.BoolOp):
                values = [walk(v) for v in node.values]
                combine = ops.logical_and if isinstance(node.op, ast.And) else ops.logical_or
                out = values[0]
                for value in values[1:]:
                    out = combine(out, value)
                return out
            left, right = walk(node.left), walk(node.comparators[0])
            return ops.compare(_COMPARE[type(node.ops[0])], left, right)
        return walk(self._tree)


# ---------------------------------------------------------------- the problem


@dataclass(frozen=True)
class Label:
    name: str  # the label's name in the transformed data, the reports and the answers
    column: str = ""  # the raw column that holds it, or:
    rule: str = ""  # a rule over raw columns (binary: true is the positive class)
    positive: str = ""  # binary with a column: the value that is the positive class
    classes: tuple[str, ...] = ()  # multiclass: the classes, in the order the model answers
    log: bool = False  # regression: learn log1p(label), answer in the label's own units
    # A rule true where the label is really observed (the taxi's tips are recorded for card
    # trips only): the Evaluator reports every metric on those rows beside all rows.
    observed: str = ""

    def columns(self) -> tuple[str, ...]:
        return Rule(self.rule).columns if self.rule else (self.column,)


@dataclass(frozen=True)
class Blessing:
    """What the Evaluator judges a candidate by: `metric` at least (or at most) `threshold`
    overall, and no worse than the last blessed model by more than `max_change`."""

    metric: str
    threshold: float
    max_change: float
    higher_is_better: bool


DEFAULT_BLESSING = {
    "binary": Blessing("auc", 0.70, 0.01, True),
    "multiclass": Blessing("accuracy", 0.50, 0.01, True),
    "regression": Blessing("rmse", float("inf"), 0.0, False),
}


@dataclass(frozen=True)
class Problem:
    name: str  # the pipeline's, TF Serving's and the Keras model's name
    task: str
    label: Label
    features: tuple[Feature, ...]
    time_column: str = ""
    time_format: str = "unix_seconds"
    group_column: str = ""  # rows sharing a value stay on one side of the split
    key_column: str = ""  # identifies a row: passed through batch predictions
    unused: dict[str, str] = field(default_factory=dict)  # columns left out, and why
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ablated together
    slices: tuple[str, ...] = ()
    blessing: Blessing | None = None
    directory: str = ""  # where problem.yaml and schema.pbtxt live
    schema_path: str = ""  # the schema file, when not the directory's (a Trainer's input)

    def __post_init__(self) -> None:
        where = f"{self.directory or '.'}/{PROBLEM_FILE}"
        if self.task not in TASKS:
            raise ProblemError(f"{where}: task must be one of {', '.join(TASKS)}, got "
                               f"{self.task!r}")
        if bool(self.label.column) == bool(self.label.rule):
            raise ProblemError(f"{where}: the label needs one of `column` or `rule`")
        if self.label.rule and self.task != "binary":
            raise ProblemError(f"{where}: a label rule gives true/false: task binary")
        if self.task == "multiclass" and len(self.label.classes) < 3:
            raise ProblemError(f"{where}: a multiclass label lists its classes (3 or more; "
                               "two classes are task binary with `positive`)")
        if self.task == "binary" and self.label.column and self.label.positive == "":
            raise ProblemError(f"{where}: a binary label column needs `positive`: the value "
                               "that is the positive class")
        if self.time_format not in TIME_FORMATS:
            raise ProblemError(f"{where}: time format must be one of {TIME_FORMATS}")
        names = [f.name for f in self.features]
        if not names:
            raise ProblemError(f"{where}: no features")
        for name in (*self.slices, *(n for g in self.groups.values() for n in g)):
            if name not in names:
                raise ProblemError(f"{where}: {name!r} (a slice or group) is not a feature")
        if self.blessing is None:
            object.__setattr__(self, "blessing", DEFAULT_BLESSING[self.task])
        try:
            self.label.columns()
            if self.label.observed:
                Rule(self.label.observed)
        except ProblemError as e:
            raise ProblemError(f"{where}: {e}") from None

    # ------------------------------------------------------------ derived names

    @property
    def label_xf(self) -> str:
        return transformed_name(self.label.name)

    @property
    def label_sources(self) -> tuple[str, ...]:
        """Raw columns only the label reads: in training data, never sent when serving."""
        features = {f.name for f in self.features}
        return tuple(c for c in self.label.columns() if c not in features)

    @property
    def by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    @property
    def num_classes(self) -> int:
        return len(self.label.classes) if self.task == "multiclass" else 1

    @property
    def schema_file(self) -> str:
        return self.schema_path or f"{self.directory.rstrip('/')}/{SCHEMA_FILE_NAME}"

    # ------------------------------------------------------------ the label of raw rows

    def raw_labels(self, columns: Mapping[str, Any]):
        """The label of raw rows given as columns (lists or arrays of raw values: strings as
        a CSV has them, numbers, None or "" for absent), as preprocessing_fn computes it:
        int 0/1 (binary), the class index (-1: not a known class), or float (regression)."""
        import numpy as np

        label = self.label
        if label.rule:
            rule = Rule(label.rule)
            texts = rule.string_columns()
            values = {c: _as_strings(columns[c]) if c in texts else _as_numbers(columns[c])
                      for c in rule.columns}
            return np.asarray(rule.evaluate(values, NumpyOps), dtype=bool).astype(np.int64)
        raw = columns[label.column]
        if self.task == "regression":
            return _as_numbers(raw).astype(np.float64)
        text = _as_class_names(raw)
        if self.task == "binary":
            return (text == _class_name(label.positive)).astype(np.int64)
        index = {c: i for i, c in enumerate(label.classes)}
        return np.array([index.get(t, -1) for t in text], dtype=np.int64)

    def raw_label(self, row: Mapping[str, Any]):
        return self.raw_labels({c: [row.get(c)] for c in self.label.columns()})[0].item()

    # ------------------------------------------------------------ reading and writing

    def to_dict(self) -> dict[str, Any]:
        label = {k: v for k, v in dataclasses.asdict(self.label).items()
                 if v not in ("", (), False)}
        if "classes" in label:
            label["classes"] = list(label["classes"])
        out: dict[str, Any] = {"name": self.name, "task": self.task, "label": label}
        if self.time_column:
            out["time"] = {"column": self.time_column, "format": self.time_format}
        if self.group_column:
            out["group"] = self.group_column
        if self.key_column:
            out["key"] = self.key_column
        out["features"] = [_feature_dict(f) for f in self.features]
        if self.unused:
            out["unused"] = dict(self.unused)
        if self.groups:
            out["groups"] = {k: list(v) for k, v in self.groups.items()}
        if self.slices:
            out["slices"] = list(self.slices)
        b = self.blessing
        out["blessing"] = {"metric": b.metric, "threshold": b.threshold,
                           "max_change": b.max_change,
                           "direction": "higher" if b.higher_is_better else "lower"}
        return out

    def to_json(self) -> str:
        """Compact, for a component's custom_config (its cache key changes with it). No
        paths: a compiled job is the same from every checkout, and the step that receives
        it reads the schema it was given as an input."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=96)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], directory: str = "") -> Problem:
        where = f"{directory or '.'}/{PROBLEM_FILE}"
        try:
            label = dict(data["label"])
            label["classes"] = tuple(str(c) for c in label.get("classes", ()))
            if "positive" in label:
                label["positive"] = str(label["positive"])
            time = data.get("time") or {}
            blessing = data.get("blessing")
            return cls(
                name=str(data["name"]), task=str(data["task"]), label=Label(**label),
                features=tuple(_feature(f, where) for f in data["features"]),
                time_column=str(time.get("column", "")),
                time_format=str(time.get("format", "unix_seconds")),
                group_column=str(data.get("group") or ""), key_column=str(data.get("key") or ""),
                unused={str(k): str(v) for k, v in (data.get("unused") or {}).items()},
                groups={str(k): tuple(v) for k, v in (data.get("groups") or {}).items()},
                slices=tuple(data.get("slices") or ()),
                blessing=Blessing(
                    str(blessing["metric"]), float(blessing["threshold"]),
                    float(blessing.get("max_change", 0.0)),
                    str(blessing.get("direction", "higher")) == "higher") if blessing else None,
                directory=directory or str(data.get("directory", "")),
                schema_path=str(data.get("schema_path", "")))
        except (KeyError, TypeError) as e:
            raise ProblemError(f"{where}: {type(e).__name__} {e} (see schema/{PROBLEM_FILE} "
                               "for the fields)") from None

    @classmethod
    def from_json(cls, text: str) -> Problem:
        return cls.from_dict(json.loads(text))


def _feature(data: Mapping[str, Any], where: str) -> Feature:
    data = dict(data)
    try:
        data["kind"] = Kind(data["kind"])
    except ValueError:
        raise ProblemError(f"{where}: feature {data.get('name')!r}: kind must be one of "
                           f"{[k.value for k in Kind]}") from None
    if data.get("dtype") not in ("float", "int", "string"):
        raise ProblemError(f"{where}: feature {data.get('name')!r}: dtype must be float, int or "
                           "string")
    return Feature(**data)


def _feature_dict(feature: Feature) -> dict[str, Any]:
    out: dict[str, Any] = {"name": feature.name, "kind": feature.kind.value,
                           "dtype": feature.dtype}
    defaults = Feature(feature.name, feature.kind, feature.dtype)
    for f in dataclasses.fields(Feature):
        value = getattr(feature, f.name)
        if f.name not in out and value != getattr(defaults, f.name):
            out[f.name] = value
    return out


def _as_numbers(values):
    import numpy as np

    out = []
    for v in values:
        if v is None or v == "" or (isinstance(v, bytes) and not v):
            out.append(0.0)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return np.array(out, dtype=np.float32)  # what the graph computes in


def _as_strings(values):
    import numpy as np

    return np.array(["" if v is None else v.decode() if isinstance(v, bytes) else str(v)
                     for v in values], dtype=object)


def _class_name(value: Any) -> str:
    """A class as text: 1, 1.0 and "1" are one class (a CSV reader may give either)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    try:
        number = float(text)
        if number.is_integer() and text not in ("", "nan"):
            return str(int(number))
    except ValueError:
        pass
    return text


def _as_class_names(values):
    import numpy as np

    return np.array([_class_name(v) for v in values], dtype=object)


class NumpyOps:
    @staticmethod
    def logical_not(x):
        import numpy as np

        return np.logical_not(x)

    @staticmethod
    def logical_and(a, b):
        import numpy as np

        return np.logical_and(a, b)

    @staticmethod
    def logical_or(a, b):
        import numpy as np

        return np.logical_or(a, b)

    @staticmethod
    def compare(op: str, a, b):
        import operator

        return {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
                "==": operator.eq, "!=": operator.ne}[op](a, b)


# ---------------------------------------------------------------- which problem is active


def read_text(path: str) -> str:
    """A small text file, local or gs:// (a compiled job's problem lives in the image or a
    bucket)."""
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.GFile(path).read()
    return Path(path).read_text(encoding="utf-8")


def load(directory: str | Path) -> Problem:
    """The problem in `directory` (local or gs://): its problem.yaml, read and checked."""
    import yaml

    directory = str(directory).rstrip("/")
    path = f"{directory}/{PROBLEM_FILE}"
    try:
        text = read_text(path)
    except (OSError, FileNotFoundError) as e:
        raise ProblemError(f"no problem definition at {path} ({type(e).__name__}); write one "
                           "with `python -m tools.problem init`") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProblemError(f"{path}: not YAML: {e}") from None
    if not isinstance(data, dict):
        raise ProblemError(f"{path}: expected a mapping of fields")
    return Problem.from_dict(data, directory if "://" in directory
                             else os.path.abspath(directory))


# The problem travels with the model: written beside TF Serving's warmup requests, so the
# serving side (the local server, the probe, batch scoring) reads the contract the model was
# trained under, whichever problem is set where it runs.
MODEL_PROBLEM_DIR = "assets.extra/problem"


def save_to_model(problem: Problem, model_dir: str) -> None:
    import tensorflow as tf

    folder = f"{model_dir.rstrip('/')}/{MODEL_PROBLEM_DIR}"
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(f"{folder}/{PROBLEM_FILE}", "w") as f:
        f.write(problem.to_yaml())
    tf.io.gfile.copy(problem.schema_file, f"{folder}/{SCHEMA_FILE_NAME}", overwrite=True)


def from_model(model_dir: str) -> Problem | None:
    """The problem a model was trained under (None: a model exported before it travelled)."""
    folder = f"{str(model_dir).rstrip('/')}/{MODEL_PROBLEM_DIR}"
    try:
        return load(folder)
    except ProblemError:
        return None


def binary_only(what: str, problem: Problem | None = None) -> None:
    """Refuses, in one line, a part that is built for binary problems so far (README: Your
    own problem), instead of an answer that would be wrong without a word."""
    problem = problem or current()
    if problem.task != "binary":
        raise ProblemError(f"{what} is built for binary problems so far; {problem.name!r} is "
                           f"a {problem.task} problem (README: Your own problem)")


def default_directory() -> str:
    return os.environ.get(PROBLEM_DIR_ENV) or str(SCHEMA_DIR)


_active: Problem | None = None
_lock = threading.Lock()


def current() -> Problem:
    """The active problem (see the module's docstring)."""
    global _active
    with _lock:
        if _active is None:
            _active = load(default_directory())
        return _active


def activate(problem: Problem | str | None) -> Problem:
    """Makes `problem` (or its JSON, from a custom_config) the active one; None: no change."""
    global _active
    if problem is None:
        return current()
    if isinstance(problem, str):
        problem = Problem.from_json(problem)
    with _lock:
        _active = problem
    return problem


def adopt(problem: Problem | None) -> Problem:
    """Makes a model's or a step's problem the active one, unless the active one is that
    problem already (which then keeps its own folder and schema): None changes nothing."""
    if problem is None:
        return current()
    with _lock:
        if _active is not None and _active.to_dict() == problem.to_dict():
            return _active
    return activate(problem)


def from_custom_config(custom_config: Mapping[str, Any] | None) -> Problem:
    """The problem a component was handed (custom_config["problem"]), made active; the
    active one stays (with its folder) when it is that problem."""
    text = (custom_config or {}).get("problem")
    if not text:
        return current()
    return adopt(Problem.from_json(text))
