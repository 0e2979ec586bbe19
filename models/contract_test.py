"""The raw-row contract, value by value, as JSON, CSV and pandas clients write rows."""

import json
import math

import pandas as pd
import pytest

from models import contract as C

ROW = {"fare": 12.5, "trip_miles": 3.1, "trip_start_hour": 5, "trip_start_day": 2,
       "trip_start_month": 3, "payment_type": "Cash"}


def test_presence_comes_from_the_schemas_serving_spec():
    assert set(C.required()) == {"fare", "trip_miles", "trip_start_hour", "trip_start_day",
                                 "trip_start_month", "payment_type"}
    hour = next(f for f in C.fields() if f.name == "trip_start_hour")
    assert (hour.minimum, hour.maximum) == (0, 23)
    latitude = next(f for f in C.fields() if f.name == "pickup_latitude")
    assert latitude.minimum == 41.4  # as written, not its 32-bit float neighbour


@pytest.mark.parametrize("absent", ["left out", None, "", math.nan])
def test_an_optional_feature_may_be_absent_in_every_spelling(absent):
    row = dict(ROW) if absent == "left out" else {**ROW, "company": absent, "trip_seconds": absent}
    out = C.instance(row)
    assert out["company"] == "" and math.isnan(out["trip_seconds"])


def test_nan_written_as_text_is_absent_for_a_number_and_a_name_for_a_string():
    out = C.instance({**ROW, "company": "NaN", "trip_seconds": "NaN"})
    assert out["company"] == "NaN" and math.isnan(out["trip_seconds"])


def test_the_json_a_javascript_client_writes_is_taken():
    # JSON.stringify({fare: 12.5, trip_seconds: NaN, company: undefined}) drops undefined
    # and writes NaN as null.
    body = json.loads('{"fare": 12.5, "trip_miles": 3.1, "trip_start_hour": 5, '
                      '"trip_start_day": 2, "trip_start_month": 3, "payment_type": "Cash", '
                      '"trip_seconds": null}')
    assert math.isnan(C.instance(body)["trip_seconds"])


@pytest.mark.parametrize("value, said", [
    (None, "was null"), (math.nan, "was nan"), ("", "was empty"), ("left out", "was left out")])
def test_a_required_feature_is_never_imputed(value, said):
    row = {k: v for k, v in ROW.items() if k != "fare"} if value == "left out" \
        else {**ROW, "fare": value}
    with pytest.raises(C.ContractError, match=f"'fare' is required: it {said}"):
        C.instance(row, where="instance 0: ")


@pytest.mark.parametrize("feature, value, message", [
    ("fare", math.inf, "not a finite number"),
    ("fare", "-Infinity", "not a finite number"),
    ("fare", 1e308, "not a finite number the model can compute with"),
    ("fare", -50, "below the schema's minimum 0"),
    ("fare", "abc", "'abc' is not a number"),
    ("fare", True, "expects a number, got bool"),
    ("trip_start_hour", 3.5, "expects an integer"),
    ("trip_start_hour", 24, "above the schema's maximum 23"),
    ("pickup_latitude", 48.8, "above the schema's maximum 42.3"),
    ("company", 5, "expects a string, got int 5"),
    ("company", b"Caf\xe9 Cab", "is not UTF-8"),
    ("tip_pct", 3, "unknown feature"),
])
def test_values_outside_the_schema_are_refused_by_name(feature, value, message):
    with pytest.raises(C.ContractError, match=message) as error:
        C.instance({**ROW, feature: value})
    assert feature in str(error.value)


def test_unseen_strings_are_taken_for_the_vocabularys_oov_buckets():
    assert C.instance({**ROW, "payment_type": "Crypto"})["payment_type"] == "Crypto"


def test_pandas_rows_with_nan_cells_read_as_absent(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame([{**ROW, "company": None, "trip_seconds": None}]).to_csv(path, index=False)
    (row,) = pd.read_csv(path).to_dict("records")
    out = C.instance(row)
    assert out["company"] == "" and math.isnan(out["trip_seconds"]) and out["fare"] == 12.5
