"""preprocessing_fn on a handful of raw rows, through tf.Transform's real Beam implementation."""

import tempfile

import numpy as np
import pytest
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features as F
from models.preprocessing import preprocessing_fn


def raw_row(**overrides):
    """A complete raw training row; `None` marks an absent optional feature."""
    row = {
        "fare": 10.0, "trip_miles": 2.0, "trip_seconds": 600, "trip_start_timestamp": 1400000000,
        "trip_start_hour": 5, "trip_start_day": 3, "trip_start_month": 7,
        "pickup_community_area": 8, "dropoff_community_area": 32,
        "pickup_census_tract": None, "dropoff_census_tract": 17031081500,
        "pickup_latitude": 41.9, "pickup_longitude": -87.63,
        "dropoff_latitude": 41.88, "dropoff_longitude": -87.62,
        "payment_type": "Credit Card", "company": "Flash Cab", "tips": 3.0,
    }
    row.update(overrides)
    # Instance dicts hold lists: [] for an absent optional feature. Strings are bytes.
    return {
        name: [] if value is None else [value.encode() if isinstance(value, str) else value]
        for name, value in row.items()
    }


ROWS = [
    raw_row(),  # tip 30% -> big tipper
    raw_row(tips=1.0, payment_type="Cash", fare=20.0, trip_seconds=1200),  # 5%
    raw_row(tips=0.0, fare=0.0, company=None, trip_seconds=None),  # no fare, no tip
    raw_row(dropoff_latitude=None, dropoff_community_area=None, dropoff_census_tract=None,
            payment_type="Cash", trip_start_hour=23),
    raw_row(pickup_community_area=99, payment_type="Cash", tips=2.5, fare=12.5),  # exactly 20%
]


@pytest.fixture(scope="module")
def transformed():
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(F.raw_feature_spec("TRAINING"))
    )
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp):
        (rows, _), _ = (ROWS, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


def test_label_is_tip_over_twenty_percent_of_fare(transformed):
    # Exactly 20% is not "more than 20%"; a zero fare with zero tip is not a big tipper.
    assert transformed[F.LABEL_XF].tolist() == [1, 0, 0, 1, 0]


def test_every_feature_has_a_transformed_output(transformed):
    expected = {f.transformed for f in F.FEATURES} | {f.bucket_name for f in F.by_kind(F.Kind.GEO)}
    observed = {F.OBSERVED_SLICE} if F.PROBLEM.label.observed else set()
    assert expected | {F.LABEL_XF, *F.TIME_SLICES} | observed == set(transformed)


def test_numeric_is_zscored_and_missing_takes_the_mean(transformed):
    z = transformed["trip_seconds_xf"]
    assert z[2] == pytest.approx(0.0, abs=1e-6)  # missing -> mean -> z = 0
    present = np.delete(z, 2)
    assert present.mean() == pytest.approx(0.0, abs=1e-5)
    assert present.std() == pytest.approx(1.0, abs=1e-4)  # moments of observed values only
    assert z[1] > z[0]  # monotone: 1200 s > 600 s
    fare = transformed["fare_xf"]
    assert fare.mean() == pytest.approx(0.0, abs=1e-5)
    assert fare.std() == pytest.approx(1.0, abs=1e-4)


def test_int_category_keeps_range_and_sends_missing_or_out_of_range_to_oov(transformed):
    area = F.BY_NAME["pickup_community_area"]
    assert transformed["pickup_community_area_xf"].tolist() == [8, 8, 8, 8, area.size]
    assert transformed["dropoff_community_area_xf"][3] == area.size
    assert transformed["trip_start_hour_xf"].tolist() == [5, 5, 5, 23, 5]


def test_vocabulary_indexes_by_frequency_and_missing_is_not_a_real_value(transformed):
    payment = transformed["payment_type_xf"]
    assert payment[1] == payment[3] == payment[4] == 0  # Cash: most frequent
    assert payment[0] == payment[2] == 1
    company = transformed["company_xf"]
    assert company[2] != company[0]  # a missing company is not Flash Cab
    tract = F.BY_NAME["dropoff_census_tract"]
    assert 0 <= transformed["dropoff_census_tract_xf"].max() < tract.cardinality


def test_geo_is_scaled_and_missing_gets_its_own_bucket(transformed):
    lat = F.BY_NAME["dropoff_latitude"]
    buckets = transformed[lat.bucket_name]
    assert buckets[3] == lat.buckets
    assert all(0 <= b < lat.buckets for b in np.delete(buckets, 3))
    assert transformed[lat.transformed][3] == pytest.approx(0.0, abs=1e-4)


def test_time_slices_are_the_utc_year_and_quarter(transformed):
    assert transformed[F.YEAR_SLICE].tolist() == [2014] * 5  # 1400000000: 2014-05-13
    assert transformed[F.QUARTER_SLICE].tolist() == [b"2014-Q2"] * 5


def test_civil_date_is_pythons_calendar_across_leap_years_and_centuries():
    import datetime

    import tensorflow as tf

    from models.preprocessing import civil_date

    rng = np.random.default_rng(0)
    seconds = np.concatenate([rng.integers(0, 4_102_444_800, 5000),  # 1970..2100
                              [0, 951_782_400, 951_868_799, 1_456_704_000, 4_107_542_399]])
    year, month = civil_date(tf.constant(seconds))
    expected = [datetime.datetime.fromtimestamp(int(s), datetime.timezone.utc)
                for s in seconds]
    assert year.numpy().tolist() == [d.year for d in expected]
    assert month.numpy().tolist() == [d.month for d in expected]
