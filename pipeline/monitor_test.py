"""The monitor on synthetic serving logs: quiet on training-like traffic, loud on a shift."""

import json

import pytest
import tensorflow as tf

from data import bundled, simulator
from models import features as F
from models import model as M
from pipeline import monitor

ROWS = 1500


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return bundled.materialize(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def training_statistics(source, tmp_path_factory):
    """TFDV statistics of a training-like sample, saved as StatisticsGen saves them."""
    _, rows = bundled.read_rows(source)
    stats = monitor.statistics_of(rows[:5000])
    path = tmp_path_factory.mktemp("stats") / "FeatureStats.pb"
    path.write_bytes(stats.SerializeToString())
    return path


def _write_log(path, source, seed, changes, model_dir):
    """A request log as the local server writes it: features, prediction, version, key."""
    rows = list(simulator.draw(bundled.read_rows(source)[1], ROWS, seed,
                               [simulator.parse_change(c) for c in changes]))
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    features = [{k: v for k, v in row.items() if k in F.BY_NAME} for row in rows]
    predictions = signature(**M.raw_inputs(features))[M.PROBABILITY].numpy().tolist()
    with path.open("w") as f:
        for i, (row, p) in enumerate(zip(features, predictions, strict=True)):
            instance = M.raw_instance(row)
            f.write(json.dumps({"version": 1, "features": instance, "prediction": p,
                                "key": f"trip-{i}"}) + "\n")
    return rows


def _run(tmp_path, log, stats, *extra):
    return monitor.main(["--log", str(log), "--training-statistics", str(stats),
                         "--out", str(tmp_path / "report.html"),
                         "--output-root", str(tmp_path / "out"), *extra])


def test_quiet_on_traffic_like_the_training_data(source, training_statistics, exported_models,
                                                 tmp_path, capsys):
    log = tmp_path / "requests.jsonl"
    rows = _write_log(log, source, seed=11, changes=[], model_dir=exported_models[0])
    labels = tmp_path / "labels.csv"
    bundled.write_rows(labels, ["key", "tips", "fare"],
                       ({"key": f"trip-{i}", "tips": r["tips"], "fare": r["fare"]}
                        for i, r in enumerate(rows)))

    status = _run(tmp_path, log, training_statistics, "--labels", str(labels), "--key", "key")

    out = capsys.readouterr().out
    assert status == 0, out
    assert "no breach" in out
    page = (tmp_path / "report.html").read_text()
    assert "No breach." in page and page.count("data:image/png;base64,") == 2  # skew, predictions
    assert "Residuals by slice" in page and "payment_type=Cash" in page
    assert "Missing values: served rows vs training" in page


def test_flags_a_shifted_feature_and_exits_non_zero(source, training_statistics,
                                                    exported_models, tmp_path, capsys):
    log = tmp_path / "requests.jsonl"
    _write_log(log, source, seed=12, changes=["fare_inflation=1.6"],
               model_dir=exported_models[0])

    status = _run(tmp_path, log, training_statistics)

    out = capsys.readouterr().out
    assert status == monitor.BREACH_EXIT == 3
    breaches = [line for line in out.splitlines() if line.startswith("BREACH")]
    assert len(breaches) == 1 and "feature 'fare'" in breaches[0], out
    assert "Jensen-Shannon" in breaches[0]
    assert "class='bad'" in (tmp_path / "report.html").read_text()


def test_bad_input_is_exit_2_with_the_reason(training_statistics, tmp_path, capsys):
    log = tmp_path / "requests.jsonl"
    log.write_text('{"features": {"fare": 3.0}}\nnot json\n')
    assert _run(tmp_path, log, training_statistics) == 2
    assert "1 rows; distances on fewer than 100 rows" in capsys.readouterr().err
    assert _run(tmp_path, tmp_path / "missing.jsonl", training_statistics) == 2
    assert "no request log at" in capsys.readouterr().err


def test_missing_shares_of_served_rows_are_shown_next_to_trainings(source):
    _, rows = bundled.read_rows(source)
    training = monitor.statistics_of(rows[:2000])
    served_rows = [dict(r) for r in rows[2000:2600]]
    for row in served_rows[::2]:
        row["company"] = ""  # half the served rows carry no company
    frame = monitor.missing_frame(training, monitor.statistics_of(served_rows))
    trained = sum(1 for r in rows[:2000] if not r["company"]) / 20  # percent
    served = sum(1 for r in served_rows if not r["company"]) / 6
    assert frame.loc["company", "training missing %"] == pytest.approx(trained, abs=0.1)
    assert frame.loc["company", "served missing %"] == pytest.approx(served, abs=0.1)
    assert served > 50 > trained > 20
