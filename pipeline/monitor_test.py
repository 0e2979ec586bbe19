"""The monitor on synthetic serving logs: quiet on training-like traffic, loud on a shift."""

import json

import numpy as np
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
    """A training-like sample of raw rows, as a user would pass it with --training-data."""
    header, rows = bundled.read_rows(source)
    path = tmp_path_factory.mktemp("training") / "training.csv"
    bundled.write_rows(path, header, rows[:5000])
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
    return monitor.main(["--log", str(log), "--training-data", str(stats),
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
    assert "Quality from late labels" in page and "payment_type=Cash" in page
    assert "threshold at this size" in page and "calibration gap" in page


def test_flags_a_shifted_feature_and_exits_non_zero(source, training_statistics,
                                                    exported_models, tmp_path, capsys):
    log = tmp_path / "requests.jsonl"
    _write_log(log, source, seed=12, changes=["fare_inflation=1.6"],
               model_dir=exported_models[0])

    status = _run(tmp_path, log, training_statistics)

    out = capsys.readouterr().out
    assert status == monitor.BREACH_EXIT == 3
    breaches = [line for line in out.splitlines() if line.startswith("BREACH")]
    assert len(breaches) == 1 and "feature 'fare' distribution" in breaches[0], out
    assert "class='bad'" in (tmp_path / "report.html").read_text()


def test_bad_input_is_exit_2_with_the_reason(training_statistics, tmp_path, capsys):
    log = tmp_path / "requests.jsonl"
    log.write_text('{"features": {"fare": 3.0}}\nnot json\n')
    assert _run(tmp_path, log, training_statistics) == 2
    assert "1 rows; checks on fewer than 100 rows" in capsys.readouterr().err
    assert _run(tmp_path, tmp_path / "missing.jsonl", training_statistics) == 2
    assert "no request log at" in capsys.readouterr().err


@pytest.mark.parametrize("change, feature, check", [
    ("missing=company:0.5", "company", "missing"),
    ("payment_shift=Crypto:0.2", "payment_type", "unseen"),
])
def test_missing_values_and_unseen_categories_are_alarms(source, training_statistics,
                                                         exported_models, tmp_path, capsys,
                                                         change, feature, check):
    log = tmp_path / "requests.jsonl"
    _write_log(log, source, seed=13, changes=[change], model_dir=exported_models[0])

    status = _run(tmp_path, log, training_statistics)

    breaches = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith("BREACH")]
    assert status == 3
    assert any(f"feature '{feature}' {check}" in b for b in breaches), breaches


def test_values_the_schema_refuses_are_an_alarm_naming_them(training_statistics, tmp_path,
                                                           capsys):
    rows = bundled.read_rows(training_statistics)[1][::16][:300]  # spread over the sample
    log = tmp_path / "requests.jsonl"
    with log.open("w") as f:
        for i, row in enumerate(rows):
            features = {k: row[k] for k in F.BY_NAME}
            if i < 2:
                features["fare"] = "abc"
            f.write(json.dumps(features) + "\n")

    assert _run(tmp_path, log, training_statistics) == 3

    out = capsys.readouterr().out
    (breach,) = [line for line in out.splitlines() if line.startswith("BREACH")] or [out]
    assert "feature 'fare': 2 of 300 values refused by the schema (2 not a number)" in breach


def test_flipped_late_labels_are_a_quality_alarm_against_the_evaluation(
        source, training_statistics, tmp_path):
    # A log of an informative model (the check is on labels, not on this model's skill).
    _, rows = bundled.read_rows(source)
    rng = np.random.default_rng(14)
    rows = [rows[i] for i in rng.choice(len(rows), 600, replace=False)]
    truth = [int(float(r["tips"] or 0) > F.TIP_FRACTION * float(r["fare"] or 0)) for r in rows]
    log = tmp_path / "requests.jsonl"
    with log.open("w") as f:
        for i, (row, y) in enumerate(zip(rows, truth, strict=True)):
            score = float(np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2), 0, 1))
            f.write(json.dumps({"features": {k: row[k] for k in F.BY_NAME},
                                "prediction": score, "key": f"trip-{i}"}) + "\n")
    training = monitor.read_training_csv(training_statistics)

    def report(labels: list[int], auc: float):
        path = tmp_path / "labels.csv"
        bundled.write_rows(path, ["key", F.LABEL],
                           ({"key": f"trip-{i}", F.LABEL: y} for i, y in enumerate(labels)))
        reference = monitor.Reference("run", 1, "", {"auc": auc})
        return monitor.monitor(log, str(F.SCHEMA_FILE), tmp_path / "r.html",
                               training_rows=training, reference=reference, labels=path,
                               key="key")

    # The model's AUC on these rows, as if the Evaluator had measured it: no alarm.
    served = monitor.read_log(log, "key")
    from pipeline.monitoring import quality
    auc = quality.auc(np.array(truth), np.array(served.predictions))
    findings, _ = report(truth, auc)
    assert not [f for f in findings if f.startswith("quality")], findings
    rng = np.random.default_rng(0)
    flipped = [1 - y if rng.random() < 0.4 else y for y in truth]
    findings, page = report(flipped, auc)
    (finding,) = [f for f in findings if f.startswith("quality")]
    assert f"vs {auc:.3f} at evaluation" in finding
    assert "Quality from late labels" in page.read_text()


def test_clean_batches_stay_quiet_and_each_shift_alarms_at_600_rows(source):
    """The calibration itself, at fixed seeds: a clean batch of training-like rows raises
    nothing; the same batch with one feature shifted raises exactly that feature."""
    from pipeline.monitoring import feature_checks

    _, rows = bundled.read_rows(source)
    rows = list(np.random.default_rng(0).permutation(rows))  # the file is not in random order
    baseline = feature_checks.Baseline(rows[:8000], F.load_schema())
    held_out = rows[8000:]
    for seed in range(3):
        batch = [dict(r) for r in np.random.default_rng(seed).choice(held_out, 600)]
        assert not [c.finding() for c in baseline.check(batch) if c.alarm]
        shifted = [{**r, "trip_miles": f"{float(r['trip_miles']) * 0.3:.2f}"} for r in batch]
        alarms = {(c.feature, c.check) for c in baseline.check(shifted) if c.alarm}
        assert alarms == {("trip_miles", "distribution")}
