"""Out-of-time evaluation and the leakage guards, on simulated data with planted problems,
through the real ExampleGen executor, LeakageCheck and AnomalyGate, and a real Transform and
model: a planted leak is named, an overlap in time or in groups stops the gate, and a group
effect that a random split lets the model memorise is not counted by a split by group."""

import json
import logging
import shutil
from pathlib import Path

import pytest
from tfx.types import standard_artifacts

from benchmarks import group_split
from benchmarks.group_split import split_examples as example_gen
from data import simulator
from models import features as F
from pipeline.components import arrow_example_gen as A
from pipeline.components import leakage_check as L
from pipeline.components.anomaly_gate import AnomalyGate, DataValidationError
from reporting.artifacts import LEAKAGE_FILE
from settings.layout import SCHEMA_DIR

ROWS = 3000


def simulated(tmp_path: Path, *changes: str, rows: int = ROWS) -> Path:
    simulator.write_span(tmp_path / "spans", 1, rows, seed=3,
                         changes=[simulator.parse_change(c) for c in changes])
    return tmp_path / "spans" / "span-1"


def gate(tmp_path: Path, examples: Path, split: dict) -> dict:
    """LeakageCheck's findings on `examples`, then AnomalyGate's verdict on them (with the
    validator's anomalies empty): returns the findings; the gate raises on a stop."""
    result = L.check(str(examples), ["train", "eval"], split, str(SCHEMA_DIR))
    leakage = standard_artifacts.ExampleAnomalies()
    leakage.uri = str(tmp_path / "leakage")
    Path(leakage.uri).mkdir(exist_ok=True)
    (Path(leakage.uri) / LEAKAGE_FILE).write_text(json.dumps(result))
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path / "anomalies")
    anomalies.split_names = '["train", "eval"]'
    for name in ("train", "eval"):
        (Path(anomalies.uri) / f"Split-{name}").mkdir(parents=True, exist_ok=True)
        (Path(anomalies.uri) / f"Split-{name}" / "SchemaDiff.pb").write_bytes(b"")
    AnomalyGate.EXECUTOR_SPEC.executor_class._FUNCTION(anomalies=anomalies, leakage=leakage)
    return result


def test_a_planted_leak_is_named_and_the_honest_columns_are_not(tmp_path, caplog):
    split = example_gen(simulated(tmp_path, "leak=company:1.0"), tmp_path / "out",
                        by_time=A.TimeSplit(F.TIME_COLUMN))
    with caplog.at_level(logging.WARNING):
        found = gate(tmp_path, tmp_path / "out", split)
    assert found["single_feature_auc"]["company"] > 0.99
    flagged = [f for f in found["flags"] if "alone predicts the label" in f]
    assert len(flagged) == 1 and "feature 'company'" in flagged[0]
    assert "feature 'company' alone predicts the label" in caplog.text  # the gate says it
    assert found["stops"] == [] and max(v for k, v in found["single_feature_auc"].items()
                                        if k != "company") < 0.95


def test_rows_from_before_the_eval_period_in_train_stop_the_gate(tmp_path):
    """A training file with rows as new as the eval split (a span re-exported out of order)."""
    split = example_gen(simulated(tmp_path), tmp_path / "out", by_time=A.TimeSplit(F.TIME_COLUMN))
    newest = sorted((tmp_path / "out" / "Split-eval").iterdir())[0]
    shutil.copy(newest, tmp_path / "out" / "Split-train" / "late-rows.gz")
    with pytest.raises(DataValidationError, match="train and eval overlap in time"):
        gate(tmp_path, tmp_path / "out", split)
    found = json.loads((tmp_path / "leakage" / LEAKAGE_FILE).read_text())
    assert found["duplicates"]["count"] > 0  # the copied rows are also seen twice
    assert found["time"]["train"][1] >= found["time"]["eval"][0]


def test_a_split_by_group_keeps_every_group_on_one_side_and_the_gate_checks_it(tmp_path):
    data = simulated(tmp_path, "group_effect=60:1.0")
    split = example_gen(data, tmp_path / "out", partition="company")
    found = gate(tmp_path, tmp_path / "out", split)
    assert split["by"] == "group" and found["groups"]["shared"] == 0
    assert 5 < found["groups"]["eval_values"] < 55
    # One eval file among the training files: its companies are now on both sides.
    eval_file = sorted((tmp_path / "out" / "Split-eval").iterdir())[0]
    shutil.copy(eval_file, tmp_path / "out" / "Split-train" / "moved.gz")
    with pytest.raises(DataValidationError, match="partition feature 'company' are in both"):
        gate(tmp_path, tmp_path / "out", split)


def test_a_group_effect_is_memorised_by_a_random_split_and_not_counted_by_a_group_split(
        tmp_path):
    """Each of 40 companies tips at its own rate, and that is all the signal: a random split
    lets the model learn each company's rate and scores it on the same companies; a split by
    company scores it on companies it never saw, where it can only guess, as it will for a
    new company in production."""
    found = group_split.measure(tmp_path, rows=4000, companies=40, steps=400)
    random_auc, grouped_auc = found["random_auc"], found["by_company_auc"]
    assert random_auc > 0.65, random_auc
    assert abs(grouped_auc - 0.5) < 0.08, grouped_auc  # new companies: nothing to go on
    assert random_auc - grouped_auc > 0.1


def _write(path: Path, rows: list[dict]) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), "GZIP") as writer:
        for row in rows:
            feature = {}
            for name, value in row.items():
                if isinstance(value, str):
                    feature[name] = tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[value.encode()]))
                elif isinstance(value, float):
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
                else:
                    feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


def test_rows_whose_types_are_not_the_schema_s_are_read_for_the_gate_to_stop(tmp_path):
    """A text 'fare' where the schema says FLOAT (ExampleGen types a column by what it
    holds, and the gate stops such data after LeakageCheck has read it): in every row of a
    split, and in a later batch of a split whose first rows had numbers."""
    def row(i: int, fare) -> dict:
        return {"fare": fare, "tips": 1.0, "trip_start_timestamp": 1_400_000_000 + i,
                "payment_type": "Cash" if i % 2 else "Credit Card"}

    later = L.BATCH + 10
    _write(tmp_path / "Split-train" / "a.gz", [row(i, 5.0 + i % 7) for i in range(later)])
    _write(tmp_path / "Split-train" / "b.gz", [row(later + i, "N/A") for i in range(20)])
    _write(tmp_path / "Split-eval" / "a.gz",
           [row(2 * later + i, "N/A" if i < 5 else "7.5") for i in range(300)])
    found = L.check(str(tmp_path), ["train", "eval"], {"by": "time",
                                                       "column": "trip_start_timestamp"},
                    str(SCHEMA_DIR))
    assert found["rows"] == {"train": later + 20, "eval": 300}
    assert found["stops"] == []  # train before eval in time
    assert found["time"]["eval"][0] == 1_400_000_000 + 2 * later
