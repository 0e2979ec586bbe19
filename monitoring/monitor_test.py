"""The monitor on synthetic serving logs: quiet on training-like traffic, loud on a shift."""

import json

import numpy as np
import pytest
import tensorflow as tf

from data import bundled, simulator
from models import features as F
from models import model as M
from monitoring import monitor

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
    truth = [F.raw_label(r) for r in rows]
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
    from monitoring import quality
    auc = quality.auc(np.array(truth), np.array(served.predictions))
    findings, _, _ = report(truth, auc)
    assert not [f for f in findings if f.startswith("quality")], findings
    rng = np.random.default_rng(0)
    flipped = [1 - y if rng.random() < 0.4 else y for y in truth]
    findings, _, page = report(flipped, auc)
    (finding,) = [f for f in findings if f.startswith("quality")]
    assert f"vs {auc:.3f} at evaluation" in finding
    assert "Quality from late labels" in page.read_text()


def test_clean_batches_stay_quiet_and_each_shift_alarms_at_600_rows(source):
    """The calibration itself, at fixed seeds: a clean batch of training-like rows raises
    nothing; the same batch with one feature shifted raises exactly that feature."""
    from monitoring import feature_checks

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


def _write_timed_log(path, source, windows):
    """A request log of several hours: (rows, changes) per hour, with the server's `time`."""
    _, rows = bundled.read_rows(source)
    start = 1_780_000_000 - 1_780_000_000 % 3600  # on the hour
    with path.open("w") as f:
        for hour, (n, changes) in enumerate(windows):
            drawn = simulator.draw(rows, n, 40 + hour, [simulator.parse_change(c) for c in changes])
            for i, row in enumerate(drawn):
                f.write(json.dumps({"time": start + hour * 3600 + i,
                                    "features": {k: row[k] for k in F.BY_NAME}}) + "\n")
    return start


def test_a_log_checked_by_hour_names_the_window_that_breached(source, training_statistics,
                                                              tmp_path, capsys):
    import time

    log = tmp_path / "requests.jsonl"
    start = _write_timed_log(log, source, [(600, []), (600, []), (600, []),
                                           (600, ["fare_inflation=3"]), (40, [])])

    status = _run(tmp_path, log, training_statistics, "--monitor-window", "hour")

    out = capsys.readouterr().out
    assert status == monitor.BREACH_EXIT, out
    breaches = [line for line in out.splitlines() if line.startswith("BREACH")]
    fourth = time.strftime("%Y-%m-%d %H:00Z", time.gmtime(start + 3 * 3600))
    assert breaches and all(b.startswith(f"BREACH [{fourth}] ") for b in breaches), out
    assert any("feature 'fare' distribution" in b for b in breaches)
    page = (tmp_path / "report.html").read_text()
    assert "Over time: 4 hour windows" in page
    assert "40 rows, fewer than --min-rows, not checked" in page
    assert "alarm line" in page and page.count("data:image/png;base64,") == 2  # trend, checks
    assert f"window {fourth}, the latest" in page


def test_a_window_needs_the_servers_time_on_every_record(training_statistics, tmp_path, capsys):
    rows = bundled.read_rows(training_statistics)[1][:200]
    log = tmp_path / "requests.jsonl"
    log.write_text("".join(json.dumps({"features": {k: r[k] for k in F.BY_NAME}}) + "\n"
                           for r in rows))
    assert _run(tmp_path, log, training_statistics, "--monitor-window", "day") == 2
    assert "needs the server's 'time' on every record; 200 of 200 rows have none" in \
        capsys.readouterr().err
    assert _run(tmp_path, log, training_statistics, "--monitor-window", "week") == 2
    assert "monitor_window must be hour, day or empty" in capsys.readouterr().err


def _batch(label: str, ratios: dict[str, float]) -> monitor.Batch:
    from monitoring import calibration, feature_checks

    checks = [feature_checks.Check(name, "distribution", 600, "", "",
                                   calibration.Calibrated(r * 0.05, 0.05, 0.5, r >= 1))
              for name, r in ratios.items()]
    return monitor.Batch(label, monitor.Served(), checks, [], 0.001, None)


def test_a_steady_climb_toward_the_alarm_line_is_watched_and_noise_is_not():
    climbing = [0.1, 0.25, 0.4, 0.5, 0.7]
    noisy = [0.3, 0.1, 0.45, 0.2, 0.35]
    batches = [_batch(str(i), {"fare": c, "trip_miles": n, "company": min(1.2, c * 2)})
               for i, (c, n) in enumerate(zip(climbing, noisy, strict=True))]

    (watch,) = monitor.rising(batches)

    assert watch.startswith("feature 'fare' distribution rising over the last 5 windows: "
                            "0.10 -> 0.25 -> 0.40 -> 0.50 -> 0.70 of its threshold")
    assert "crosses the alarm line in about 3 more windows" in watch
    assert monitor.rising(batches[:3]) == []  # too few windows to call a trend
    # 'company' already alarms: it is a breach, not something to watch.


def test_a_false_alarm_rate_below_what_20000_draws_can_resolve_still_alarms():
    from monitoring import calibration as C

    train = np.full(10, 800)
    shifted = np.array([300] + [30] * 9)  # a third of the batch in one decile
    result = C.calibrate(train, shifted, C.jensen_shannon, alpha=2e-5, floor=0.02, seed=1)
    assert result.alarm and result.p_value <= 2e-5


def _serve(tmp_path, model_dir):
    """The local server as the README starts it, logging every request."""
    import shutil
    import subprocess
    import sys

    from models.local_cluster import free_ports

    shutil.copytree(model_dir, tmp_path / "serving" / "1")
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port", str(port), "--model-name", "taxi",
         "--model-base-path", str(tmp_path / "serving"), "--config-dir", str(tmp_path / "cfg"),
         "--request-log", str(tmp_path / "requests.jsonl"), "--log-sample-rate", "1",
         "--log-level", "WARNING"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return process, port


def _post(port: int, rows: list[dict], request_id: str) -> None:
    """As curl or a browser would: JSON instances, the caller's key in X-Request-Id."""
    import urllib.request

    body = json.dumps({"instances": [M.raw_instance(r) for r in rows]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/taxi:predict", body,
                                     {"Content-Type": "application/json",
                                      "X-Request-Id": request_id})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert len(json.loads(response.read())["predictions"]) == len(rows)


def _monitor_command(tmp_path, log, training, *extra):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "monitoring.monitor", "--log", str(log), "--training-data",
         str(training), "--output-root", str(tmp_path / "out"), "--out",
         str(tmp_path / "report.html"), *extra], capture_output=True, text=True, timeout=600)


def test_rows_served_by_the_real_server_are_monitored_by_the_real_command(
        source, training_statistics, exported_models, tmp_path):
    import time
    import urllib.error

    process, port = _serve(tmp_path, exported_models[0])
    _, rows = bundled.read_rows(source)
    # Trips drawn at random over the whole file, as traffic comes (the file is in no random
    # order: a block of consecutive rows is one part of town).
    held_out = [{k: r[k] for k in F.BY_NAME} | {"tips": r["tips"]}
                for r in np.random.default_rng(5).choice(rows, 600, replace=False)]
    try:
        deadline = time.monotonic() + 120  # bounded: the model loads in a few seconds
        while True:
            try:
                _post(port, held_out[:1], "warm-up")
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, \
                    process.stdout.read().decode() if process.poll() is not None else "timeout"
                time.sleep(0.5)
        log = tmp_path / "requests.jsonl"
        log.write_text("")  # the warm-up request is not traffic
        for start in range(0, 600, 100):
            _post(port, [{k: r[k] for k in F.BY_NAME} for r in held_out[start:start + 100]],
                  f"batch-{start // 100}")
        clean = tmp_path / "clean.jsonl"
        clean.write_text(log.read_text())
        log.write_text("")
        for start in range(0, 600, 100):  # the same trips, fares now in cents
            _post(port, [{k: r[k] for k in F.BY_NAME} | {"fare": float(r["fare"] or 0) * 100}
                         for r in held_out[start:start + 100]], f"cents-{start // 100}")
        shifted = tmp_path / "shifted.jsonl"
        shifted.write_text(log.read_text())
    finally:
        process.terminate()
        process.wait(timeout=30)
    labels = tmp_path / "labels.csv"
    bundled.write_rows(labels, ["key", "tips", "fare"],
                       ({"key": f"batch-{i // 100}/{i % 100}", "tips": r["tips"],
                         "fare": r["fare"]} for i, r in enumerate(held_out)))

    done = _monitor_command(tmp_path, clean, training_statistics, "--labels", str(labels),
                            "--key", "key")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "monitor: no breach" in done.stdout
    page = (tmp_path / "report.html").read_text()
    assert "Quality from late labels" in page and "'version': 1" not in page  # rows joined

    done = _monitor_command(tmp_path, shifted, training_statistics)
    assert done.returncode == monitor.BREACH_EXIT, done.stdout + done.stderr[-3000:]
    breaches = [line for line in done.stdout.splitlines() if line.startswith("BREACH")]
    assert breaches and any("feature 'fare'" in b for b in breaches), done.stdout
    assert not [b for b in breaches if "'fare'" not in b], breaches
