"""The feature spec: one source of truth for preprocessing, model, serving signatures and tests.

Raw column names are those of the Chicago Taxi CSV. Each model feature has a kind that
decides its tf.Transform treatment (models/preprocessing.py), its Keras input
(models/model.py) and its raw serving input (string, or number with NaN for missing).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from settings.layout import SCHEMA_FILE


class Kind(enum.Enum):
    NUMERIC = "numeric"  # log1p (if skewed) + z-score; missing -> training mean
    GEO = "geo"  # z-score + quantile buckets; missing -> its own bucket
    INT_CATEGORY = "int_category"  # small known integer range; missing/out-of-range -> OOV index
    VOCAB = "vocab"  # vocabulary from data (top_k) + OOV hash buckets; missing -> ''


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    dtype: str  # raw type in the examples: "float", "int" or "string"
    log: bool = False  # NUMERIC: apply log1p before scaling (heavy right tail)
    buckets: int = 0  # GEO: number of quantile buckets
    size: int = 0  # INT_CATEGORY: values 0..size-1 are kept
    top_k: int = 0  # VOCAB: vocabulary size cap
    oov: int = 1  # VOCAB: hash buckets for values outside the vocabulary
    embedding_dim: int = 0  # categorical kinds: width of the learned embedding

    @property
    def transformed(self) -> str:
        return transformed_name(self.name)

    @property
    def bucket_name(self) -> str:
        return transformed_name(f"{self.name}_bucket")

    @property
    def categorical(self) -> bool:
        return self.kind in (Kind.INT_CATEGORY, Kind.VOCAB)

    @property
    def cardinality(self) -> int:
        """Number of distinct indices the transformed categorical can take."""
        if self.kind is Kind.INT_CATEGORY:
            return self.size + 1  # + one OOV index for missing or out-of-range values
        if self.kind is Kind.VOCAB:
            return self.top_k + self.oov
        if self.kind is Kind.GEO:
            return self.buckets + 1  # + one bucket for missing coordinates
        raise ValueError(f"{self.name} is not categorical")


def transformed_name(name: str) -> str:
    return f"{name}_xf"


FEATURES: tuple[Feature, ...] = (
    Feature("fare", Kind.NUMERIC, "float", log=True),
    Feature("trip_miles", Kind.NUMERIC, "float", log=True),
    Feature("trip_seconds", Kind.NUMERIC, "int", log=True),
    Feature("pickup_latitude", Kind.GEO, "float", buckets=20, embedding_dim=4),
    Feature("pickup_longitude", Kind.GEO, "float", buckets=20, embedding_dim=4),
    Feature("dropoff_latitude", Kind.GEO, "float", buckets=20, embedding_dim=4),
    Feature("dropoff_longitude", Kind.GEO, "float", buckets=20, embedding_dim=4),
    Feature("trip_start_hour", Kind.INT_CATEGORY, "int", size=24, embedding_dim=4),
    Feature("trip_start_day", Kind.INT_CATEGORY, "int", size=8, embedding_dim=3),  # 1..7
    Feature("trip_start_month", Kind.INT_CATEGORY, "int", size=13, embedding_dim=3),  # 1..12
    # Chicago has 77 community areas, numbered 1..77.
    Feature("pickup_community_area", Kind.INT_CATEGORY, "int", size=78, embedding_dim=6),
    Feature("dropoff_community_area", Kind.INT_CATEGORY, "int", size=78, embedding_dim=6),
    # Census tracts are 11-digit ids: a vocabulary, not a range.
    Feature("dropoff_census_tract", Kind.VOCAB, "int", top_k=200, oov=10, embedding_dim=6),
    Feature("payment_type", Kind.VOCAB, "string", top_k=20, oov=2, embedding_dim=3),
    Feature("company", Kind.VOCAB, "string", top_k=100, oov=10, embedding_dim=6),
)

# Features that carry one kind of information together, ablated as a unit
# (tools/ablation.py --by group): removing one coordinate of a pair says little while
# the other and the community area still place the trip.
GROUPS: dict[str, tuple[str, ...]] = {
    "trip size": ("fare", "trip_miles", "trip_seconds"),
    "pickup place": ("pickup_latitude", "pickup_longitude", "pickup_community_area"),
    "dropoff place": ("dropoff_latitude", "dropoff_longitude", "dropoff_community_area",
                      "dropoff_census_tract"),
    "time": ("trip_start_hour", "trip_start_day", "trip_start_month"),
    "payment": ("payment_type",),
    "company": ("company",),
}

# Raw columns the model does not use, and why. They stay in the schema and are validated.
UNUSED = {
    "pickup_census_tract": "missing in all but 1 of 15,002 rows of the bundled data",
    "trip_start_timestamp": "identifies the time span; a model on it would not generalise",
}

# Slices the Evaluator reports every metric by (and the monitor its late-label quality).
SLICES = ("payment_type", "trip_start_hour")

# When a trip happened: the out-of-time split puts the newest rows in the eval split, and the
# Evaluator reports every metric by year and quarter of it, so decay shows in every run.
# These are outputs of preprocessing_fn that the model does not read; TFMA slices on them.
TIME_COLUMN = "trip_start_timestamp"
YEAR_SLICE = "trip_start_year_xf"  # e.g. 2016
QUARTER_SLICE = "trip_start_quarter_xf"  # e.g. b"2016-Q3"
TIME_SLICES = (YEAR_SLICE, QUARTER_SLICE)

LABEL_SOURCE = "tips"  # raw column the label is computed from; absent when serving
FARE = "fare"
LABEL = "big_tipper"  # tips > TIP_FRACTION * fare, computed in preprocessing_fn
TIP_FRACTION = 0.2
LABEL_XF = transformed_name(LABEL)


def raw_label(row: Mapping[str, object]) -> int:
    """The label of one raw CSV row (strings, empty = 0), as preprocessing_fn computes it."""
    return int(float(row[LABEL_SOURCE] or 0) > TIP_FRACTION * float(row[FARE] or 0))

# Raw features a serving request carries (the label source never does).
SERVING_FEATURES: tuple[Feature, ...] = FEATURES
BY_NAME = {f.name: f for f in FEATURES}


def by_kind(kind: Kind) -> list[Feature]:
    return [f for f in FEATURES if f.kind is kind]


def load_schema(path: Path | str = SCHEMA_FILE):
    """The curated schema (tensorflow_metadata Schema proto)."""
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(str(path))


def raw_feature_spec(environment: str = "TRAINING", path: Path | str = SCHEMA_FILE) -> dict:
    """tf.io feature spec of the raw examples in `environment` (SERVING drops the label source)."""
    return dict(_raw_feature_spec(environment, str(path)))


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
