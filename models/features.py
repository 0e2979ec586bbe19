"""The feature spec of the active problem (models/problem.py): names, kinds, the label, the
time column and the schema, as the preprocessing, the model, the serving signatures and the
tests read them.

The names below are views of the active problem, read when asked for (`F.FEATURES`), so a
component handed another problem sees that problem's features. Each feature's kind decides
its tf.Transform treatment (models/preprocessing.py), its Keras input (models/model.py) and
its raw serving input (string, or number with NaN for missing).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.problem import Feature, Kind, Problem, current, transformed_name

__all__ = ["Feature", "Kind", "by_kind", "load_schema", "raw_feature_spec", "raw_label",
           "transformed_name"]

# The Evaluator's slices by when a row happened: outputs of preprocessing_fn that the model
# does not read (TFMA slices on them), from the problem's time column.
YEAR_SLICE = "time_year_xf"  # e.g. 2016
QUARTER_SLICE = "time_quarter_xf"  # e.g. b"2016-Q3"
TIME_SLICES = (YEAR_SLICE, QUARTER_SLICE)
# 1 where the problem's `label.observed` rule holds: the Evaluator's slice of rows whose
# label is really observed.
OBSERVED_SLICE = "label_observed_xf"


def _views(problem: Problem) -> dict[str, Any]:
    sources = problem.label_sources
    return {
        "PROBLEM": problem,
        "TASK": problem.task,
        "FEATURES": problem.features,
        # Raw features a serving request carries (the label's sources never are).
        "SERVING_FEATURES": problem.features,
        "BY_NAME": problem.by_name,
        "GROUPS": problem.groups,
        "UNUSED": problem.unused,
        "SLICES": problem.slices,
        "TIME_COLUMN": problem.time_column,
        "LABEL": problem.label.name,
        "LABEL_XF": problem.label_xf,
        "LABEL_SOURCES": sources,
        # The first raw column only the label reads (the taxi's tips), "" when the label is
        # a feature-free column of its own.
        "LABEL_SOURCE": sources[0] if sources else "",
        "SCHEMA_FILE": Path(problem.schema_file),
    }


def __getattr__(name: str) -> Any:
    views = _views(current())
    if name in views:
        return views[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def raw_label(row: Mapping[str, object]):
    """The label of one raw row (strings as a CSV has them, empty = absent), as
    preprocessing_fn computes it."""
    return current().raw_label(row)


def by_kind(kind: Kind) -> list[Feature]:
    return [f for f in current().features if f.kind is kind]


def load_schema(path: Path | str | None = None):
    """The curated schema (tensorflow_metadata Schema proto); default: the problem's."""
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(str(path or current().schema_file))


def raw_feature_spec(environment: str = "TRAINING", path: Path | str | None = None) -> dict:
    """tf.io feature spec of the raw examples in `environment` (SERVING drops the label's
    sources); default: the problem's schema."""
    return dict(_raw_feature_spec(environment, str(path or current().schema_file)))


@functools.cache
def _raw_feature_spec(environment: str, path: str) -> dict:
    """Read once per schema file and environment: callers ask for it once per row."""
    from tensorflow_transform.tf_metadata import schema_utils

    schema = load_schema(path)
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    return {
        name: value
        for name, value in spec.items()
        if not _excluded(schema, name, environment)
    }


def _excluded(schema, name: str, environment: str) -> bool:
    feature = next(f for f in schema.feature if f.name == name)
    return environment in feature.not_in_environment
