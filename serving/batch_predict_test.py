"""Batch predictions from a CSV with a real exported model (the Transform graph inside)."""

import csv
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data import bundled
from models import model as M
from serving import batch_predict

ROWS = 300


@pytest.fixture(scope="module")
def trips(tmp_path_factory):
    """ROWS raw rows with a key column; five break the raw-row contract, one leaves an
    optional value empty (fine)."""
    with open(bundled.materialize(), newline="") as f:
        reader = csv.DictReader(f)
        header, rows = ["trip_id", *reader.fieldnames], list(itertools.islice(reader, ROWS))
    for i, row in enumerate(rows):
        row["trip_id"] = f"trip-{i}"
    rows[10]["fare"] = "twelve"
    rows[20]["fare"] = ""  # required: never imputed
    rows[30]["fare"] = "inf"
    rows[40]["trip_start_hour"] = "24"
    rows[50]["company"] = ""  # optional: absent
    rows[250]["trip_start_hour"] = "noon"
    path = tmp_path_factory.mktemp("batch") / "trips.csv"
    bundled.write_rows(path, header, rows)
    return path, rows


def test_every_good_row_is_scored_with_its_key_as_the_saved_model_does(exported_models, trips,
                                                                      tmp_path):
    path, rows = trips
    out = tmp_path / "predictions.parquet"
    summary = batch_predict.predict_csv(path, out, exported_models[0], key="trip_id",
                                        chunk_rows=128, batch_rows=50)  # several chunks
    assert (summary.rows, summary.predicted, summary.bad) == (ROWS, ROWS - 5, 5)
    frame = pd.read_parquet(out)
    good = [r for i, r in enumerate(rows) if i not in (10, 20, 30, 40, 250)]
    assert list(frame.columns) == ["trip_id", "probability"]
    assert list(frame["trip_id"]) == [r["trip_id"] for r in good]
    assert frame["probability"].between(0, 1).all()
    model = tf.saved_model.load(exported_models[0])
    raw = [{k: v for k, v in r.items() if k != "trip_id"} for r in good]
    expected = model.signatures["serving_default"](**M.raw_inputs(raw))[M.PROBABILITY].numpy()
    np.testing.assert_allclose(frame["probability"], expected, rtol=1e-6, atol=1e-7)

    with open(summary.bad_rows_file, newline="") as f:
        bad = list(csv.DictReader(f))
    assert [(b["row"], b["trip_id"]) for b in bad] == [
        ("11", "trip-10"), ("21", "trip-20"), ("31", "trip-30"), ("41", "trip-40"),
        ("251", "trip-250")]
    assert [b["reason"] for b in bad[:4]] == [
        "'fare': 'twelve' is not a number",
        "'fare' is required: it was empty, and the model never guesses a required value",
        "'fare': 'inf' is not a finite number the model can compute with (32-bit float)",
        "'trip_start_hour': '24' is above the schema's maximum 23"]
    assert "row 251: 'trip_start_hour': 'noon'" in batch_predict.describe(summary)


def test_cli_writes_csv_keyed_by_row_and_exits_by_what_went_wrong(exported_models, trips,
                                                                  tmp_path, capsys,
                                                                  monkeypatch):
    path, _ = trips
    monkeypatch.setenv("TAXI_OUTPUT_ROOT", str(tmp_path / "outputs"))
    out = tmp_path / "p.csv"
    model = ["--model", exported_models[0]]
    # 5 bad rows of 300 is more than 0.5%: predictions written all the same, exit 3.
    assert batch_predict.main(["--input", str(path), "--output", str(out), *model,
                               "--max-bad-fraction", "0.005"]) == 3
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["row", "probability"] and len(frame) == ROWS - 5
    assert 11 not in set(frame["row"]) and 12 in set(frame["row"])
    assert batch_predict.main(["--input", str(path), "--output", str(out), *model,
                               "--max-bad-fraction", "0.02"]) == 0
    # What the command says is on the terminal; TensorFlow's logs are in its log file.
    terminal = capsys.readouterr()
    assert "WARNING" not in terminal.out + terminal.err
    log_file = Path(terminal.out.split("logs: ")[-1].strip())
    assert log_file.parent == tmp_path / "outputs" / "logs" and log_file.is_file()

    assert batch_predict.main(["--input", str(path), "--output", str(out), *model,
                               "--key", "order_id"]) == 2
    assert "no column(s) ['order_id']" in capsys.readouterr().err
    assert batch_predict.main(["--input", str(tmp_path / "none.csv"), "--output", str(out),
                               *model]) == 2
    assert batch_predict.main(["--input", str(path), "--output", str(out),
                               "--model", str(tmp_path)]) == 2
    assert "is not a SavedModel" in capsys.readouterr().err
