"""Streaming predictions on Beam's local runner: TestStream for event time, watermark, late
and malformed events; the same probabilities as the REST server and batch predictions; and
the real local source (files dropped while the job runs) with a version pushed mid-stream.
Every wait is bounded."""

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from data import bundled
from models import features as F
from serving import batch_predict, stream
from serving.request_log import RequestLog
from serving.server import LocalModelServer, ModelRepository
from serving.server_test import MODEL, post_json, push
from settings.layout import PROJECT_ROOT


def run_test_stream(events: TestStream, serving: Path, out: Path, window_seconds: int = 60,
                    lateness: int = 300, config_dir: str = "") -> dict:
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    settings = stream.StreamSettings(str(serving), window_seconds=window_seconds,
                                     allowed_lateness_seconds=lateness, poll_seconds=0.0,
                                     config_dir=config_dir)
    pipeline = beam.Pipeline(options=options)
    rows, dead = stream.score(pipeline | events, settings, str(out / stream.TALLY))
    stream.local_sinks(rows, dead, stream.window_figures(rows, dead, settings), str(out),
                       MODEL)
    pipeline.run().wait_until_finish()
    return stream.counts(str(out))


def predictions(out: Path) -> pd.DataFrame:
    files = sorted((out / "predictions").glob("window=*/*.parquet"))
    return pd.concat([pd.read_parquet(f).assign(window=f.parent.name) for f in files],
                     ignore_index=True) if files else pd.DataFrame()


def dead_letters(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((out / stream.DEAD).glob("window=*/*.jsonl"))
            for line in f.read_text().splitlines()]


def event(row: dict, key: str, at: float) -> str:
    return json.dumps({"key": key, "event_time": at, **row})


@pytest.fixture
def serving(tmp_path, exported_models):
    base = tmp_path / "serving"
    push(exported_models[0], base, 1)
    return base


def test_event_time_windows_late_and_malformed_events_and_nothing_lost(serving, rows,
                                                                       tmp_path):
    out = tmp_path / "out"
    good = rows[:6]
    events = (TestStream()
              .advance_watermark_to(0)
              .add_elements([TimestampedValue(event(good[0], "a", 10), 10),
                             TimestampedValue(event(good[1], "b", 20), 20),
                             TimestampedValue('{"fare": 12.5, "payment_type": ', 15),
                             TimestampedValue(event({**good[2], "fare": -5}, "c", 25), 25),
                             TimestampedValue(event(good[3], "d", 70), 70)])
              .advance_watermark_to(130)  # window [0, 60) and [60, 120) close on time
              .add_elements([TimestampedValue(event(good[4], "late", 40), 40)])  # late
              .advance_watermark_to(500)  # past [0, 60)'s lateness of 300 s
              .add_elements([TimestampedValue(event(good[5], "too-late", 50), 50)])
              .advance_watermark_to_infinity())
    found = run_test_stream(events, serving, out)
    scored = predictions(out)
    assert sorted(scored["key"]) == ["a", "b", "d", "late", "too-late"]  # all scored
    assert set(scored["version"]) == {1}
    assert scored.set_index("key").loc["a", "event_time"] == 10
    dead = dead_letters(out)
    assert sorted(d["reason"].split(":")[0].strip("'") for d in dead) == ["fare", "malformed JSON"]
    assert found == {"events": 7, "predictions": 5, "dead_letters": 2}  # in = out + dead
    windows = [json.loads(line) for line in (out / "windows.jsonl").read_text().splitlines()]
    first = [w for w in windows if w["window_start"] == 0]
    assert [(w["timing"], w["events"], w["dead_letters"]) for w in first] == [
        ("on_time", 4, 2), ("late", 5, 2)]  # the too-late event is scored, not counted here
    assert first[0]["dead_letter_share"] == 0.5
    assert [w["events"] for w in windows if w["window_start"] == 60] == [1]
    logged = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert {r["key"] for r in logged} == {"a", "b", "d", "late", "too-late"}
    assert all(r["route"] == "stream" and r["version"] == 1 for r in logged)


def test_the_stream_the_rest_server_and_batch_predictions_give_the_same_probability(
        serving, tmp_path):
    """200 bundled rows, empty cells included, by the three paths."""
    header, all_rows = bundled.read_rows(bundled.materialize())
    rows = [{k: v for k, v in r.items() if k != F.LABEL_SOURCE} for r in all_rows[:200]]
    assert sum(1 for r in rows for v in r.values() if v == "") > 50  # absent values
    events = TestStream().advance_watermark_to(0).add_elements(
        [TimestampedValue(event(r, str(i), 100 + i), 100 + i) for i, r in enumerate(rows)]
    ).advance_watermark_to_infinity()
    out = tmp_path / "out"
    assert run_test_stream(events, serving, out)["predictions"] == 200
    streamed = predictions(out).set_index("key")["probability"]

    server = LocalModelServer(("127.0.0.1", 0), ModelRepository(MODEL, serving, None, 0.5),
                              RequestLog(None, 0.0), seed=0)
    server.start_background()
    try:
        status, body, _ = post_json(f"{server.url}/v1/models/{MODEL}:predict",
                                    {"instances": [{k: (None if v == "" else v)
                                                    for k, v in r.items()} for r in rows]})
    finally:
        server.close()
    assert status == 200
    pd.DataFrame(rows).assign(trip_id=range(200)).to_csv(tmp_path / "trips.csv", index=False)
    batch_predict.predict_csv(tmp_path / "trips.csv", tmp_path / "batch.parquet",
                              str(serving / "1"), key="trip_id")
    batch = pd.read_parquet(tmp_path / "batch.parquet").set_index("trip_id")["probability"]
    for i in range(200):
        assert abs(streamed[str(i)] - body["predictions"][i]) <= 1e-6
        assert abs(streamed[str(i)] - batch[i]) <= 1e-6


def test_files_dropped_into_a_running_job_are_scored_once_and_a_new_version_takes_over(
        serving, exported_models, rows, tmp_path):
    """The real local source: the command itself, files landing while it runs, version 2
    pushed in between; every row scored once, by the version newest when it arrived; a
    SIGTERM (a scheduler stopping it) ends it with the summary."""
    import signal

    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-m", "serving.stream", "--watch", str(incoming), "--out", str(out),
         "--serving-dir", str(serving), "--interval", "0.5",
         "--poll-seconds", "0.5", "--window-seconds", "5"], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def drop(name: str, lines: list[str]) -> None:
            tmp = incoming / f".{name}.tmp"
            tmp.write_text("\n".join(lines) + "\n")
            tmp.rename(incoming / name)  # lands whole

        def scored() -> pd.DataFrame:
            return predictions(out) if (out / "predictions").is_dir() else pd.DataFrame()

        drop("first.jsonl", [json.dumps({"key": f"one-{i}", **r}) for i, r in
                             enumerate(rows[:50])])
        deadline = time.monotonic() + 60
        while len(scored()) < 50 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(scored()) == 50, job.stderr.read() if job.poll() is not None else ""
        push(exported_models[1], serving, 2)
        time.sleep(2.0)  # the next batch after a poll finds it
        drop("second.jsonl", [json.dumps({"key": f"two-{i}", **r}) for i, r in
                              enumerate(rows[:49])] + ['{"broken": '])
        job.send_signal(signal.SIGTERM)  # what landed before it is still read
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr[-3000:]
    table = scored()
    assert len(table) == 99 and table["key"].is_unique  # nothing lost, nothing twice
    assert set(table[table["key"].str.startswith("one-")]["version"]) == {1}
    assert set(table[table["key"].str.startswith("two-")]["version"]) == {2}
    assert [d["reason"].split(":")[0] for d in dead_letters(out)] == ["malformed JSON"]
    assert "100 events in = 99 predictions + 1 dead letters" in stdout


def test_the_dataflow_job_reads_pubsub_writes_bigquery(serving):
    """What can be checked without the cloud: the job graph, built as the Dataflow job's
    (the runner that submits it needs GCP; that its workers' code is in the image:
    tests/test_image.py)."""
    args = argparse.Namespace(watch=None,
                              pubsub_subscription="projects/taxi-demo/subscriptions/trips",
                              pubsub_topic=None, pubsub_time_attribute="event_time",
                              bigquery_table="taxi-demo:taxi.predictions", out="", interval=1.0,
                              stop_after=None)
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    stream.build(pipeline, args, stream.StreamSettings("gs://b/serving/taxi"))
    labels = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    for name in ("PubSub", "Contract", "RunInference", "BigQueryPredictions",
                 "BigQueryDeadLetters"):
        assert any(label.split("/")[0] == name for label in labels), name


@pytest.mark.parametrize("fallback", ["constant", "refuse"])
def test_a_paused_model_is_not_what_scores_the_stream(serving, rows, tmp_path, fallback):
    """`serving.rollout pause` holds for the stream too: each row says so, or is refused."""
    from serving.rollout import Rollouts

    config = tmp_path / "config"
    rollouts = Rollouts(MODEL, serving, config, reason="flooded warehouse")
    rollouts.pause(fallback, constant=0.28 if fallback == "constant" else None)
    events = TestStream().advance_watermark_to(0).add_elements(
        [TimestampedValue(event(r, str(i), 10 + i), 10 + i) for i, r in enumerate(rows[:5])]
    ).advance_watermark_to_infinity()
    out = tmp_path / "out"
    found = run_test_stream(events, serving, out, config_dir=str(config))
    if fallback == "constant":
        table = predictions(out)
        assert found == {"events": 5, "predictions": 5, "dead_letters": 0}
        assert set(table["probability"]) == {0.28} and set(table["paused"]) == {"constant"}
    else:
        assert found == {"events": 5, "predictions": 0, "dead_letters": 5}
        assert {d["reason"] for d in dead_letters(out)} == {
            "serving is paused: flooded warehouse"}


def test_no_pushed_model_is_said_before_anything_runs(tmp_path, capsys):
    assert stream.main(["--watch", str(tmp_path), "--serving-dir",
                        str(tmp_path / "nothing")]) == 2
    assert "no pushed model" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_event_times_from_a_csv_cell_are_read_as_unix_seconds_or_iso():
    """A CSV cell holding UNIX seconds is a time (it was dead-lettered as "Invalid
    isoformat string")."""
    assert stream.parse_time("1700000000") == 1700000000.0
    assert stream.parse_time(" 1700000000.5 ") == 1700000000.5
    assert stream.parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    with pytest.raises(ValueError):
        stream.parse_time("nan")
    with pytest.raises(ValueError):
        stream.parse_time("yesterday")


def test_the_readme_command_streams_a_window_s_line_as_it_closes_and_ctrl_c_drains(
        serving, rows, tmp_path):
    """`serving.stream --watch` as the README runs it, with no --stop-after: a window's
    line lands within seconds of its end while the job runs (it landed only when the job
    ended), an event two hours old is scored but left out of the figures, a CSV of UNIX
    seconds is read, and Ctrl-C ends with the summary."""
    import signal

    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-m", "serving.stream", "--watch", str(incoming), "--out", str(out),
         "--serving-dir", str(serving), "--interval", "0.5", "--window-seconds", "3",
         "--allowed-lateness-seconds", "3"], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def drop(name: str, text: str) -> None:
        (incoming / f".{name}.tmp").write_text(text)
        (incoming / f".{name}.tmp").rename(incoming / name)

    def lines() -> list[dict]:
        path = out / "windows.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []

    try:
        drop("warm.jsonl", event(rows[0], "warm", time.time()) + "\n")
        deadline = time.monotonic() + 90
        while not lines() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)  # the model loads; the warm event's window closes
        assert lines(), job.communicate(timeout=30)[1][-3000:] if job.poll() is not None else ""
        now = time.time()
        drop("live.jsonl", "".join(event(r, f"live-{i}", now) + "\n"
                                   for i, r in enumerate(rows[1:6]))
             + event(rows[6], "old", now - 7200) + "\n")
        with (incoming / ".unix.tmp").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["key", "event_time", *rows[7]])
            writer.writeheader()
            writer.writerow({"key": "csv-0", "event_time": f"{now:.3f}", **rows[7]})
        (incoming / ".unix.tmp").rename(incoming / "unix.csv")
        end = (now // 3 + 1) * 3  # the end of the live events' window
        landed = None
        while landed is None and time.time() < end + 30 and job.poll() is None:
            if any(x["window_end"] == end for x in lines()):
                landed = time.time()
            time.sleep(0.1)
        assert landed is not None and job.poll() is None, "no line while the job ran"
        assert landed - end <= 5.0, f"the window's line landed {landed - end:.1f} s after its end"
        live = [x for x in lines() if x["window_end"] == end]
        assert [(x["timing"], x["events"]) for x in live] == [("on_time", 6)]
        job.send_signal(signal.SIGINT)
        stdout, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr[-3000:]
    assert "8 events in = 8 predictions + 0 dead letters" in stdout, stdout + stderr[-2000:]
    assert "SIGINT" in stdout + stderr and "Traceback" not in stderr
    assert sum(x["events"] for x in lines() if x["timing"] == "on_time") == 7  # not "old"
    assert set(predictions(out)["key"]) == {"warm", "old", "csv-0"} | {
        f"live-{i}" for i in range(5)}


def test_the_stream_answers_by_the_rollout_a_rollback_and_a_fallback_that_fails(
        serving, rows, tmp_path, exported_models):
    """The stream follows the same rule as the server and the router
    (serving/answering.py): after a rollback `stable` answers, not the newest push; a
    `previous` fallback that cannot load refuses its rows with the reason, never scoring
    them with another version under its name."""
    from serving.rollout import Rollouts

    push(exported_models[1], serving, 2)
    config = tmp_path / "config"
    rollouts = Rollouts(MODEL, serving, config)
    rollouts.set_stable(2)
    rollouts.set_stable(1)  # rolled back: 2 is the newest push, 1 answers

    def run(out):
        events = TestStream().advance_watermark_to(0).add_elements(
            [TimestampedValue(event(r, str(i), 10 + i), 10 + i) for i, r in enumerate(rows[:6])]
        ).advance_watermark_to_infinity()
        return run_test_stream(events, serving, out, config_dir=str(config))

    found = run(tmp_path / "out")
    assert found == {"events": 6, "predictions": 6, "dead_letters": 0}
    assert set(predictions(tmp_path / "out")["version"]) == {1}

    (serving / "1" / "saved_model.pb").write_bytes(b"not a model")  # 1 can no longer load
    rollouts.set_stable(2)
    rollouts.reason = "a bad push"
    rollouts.pause("previous", version=1)
    found = run(tmp_path / "out2")
    assert found == {"events": 6, "predictions": 0, "dead_letters": 6}
    reasons = {d["reason"] for d in dead_letters(tmp_path / "out2")}
    assert len(reasons) == 1 and "version 1" in next(iter(reasons)) and \
        "did not load" in next(iter(reasons)), reasons


def test_a_pause_in_a_remote_rollout_folder_reaches_the_stream(serving, rows, tmp_path,
                                                                capsys):
    """On Dataflow the rollout state lives in Cloud Storage: read through TensorFlow's file
    systems (`ram://` here, as `gs://` there), a pause there holds for the stream; and a
    Dataflow job given a folder on the submitting machine is refused before it starts."""
    import tensorflow as tf

    from serving.rollout import Rollouts

    local = tmp_path / "config"
    Rollouts(MODEL, serving, local, reason="flooded warehouse").pause("constant", constant=0.4)
    remote = f"ram://{tmp_path.name}/config"
    tf.io.gfile.makedirs(remote)
    tf.io.gfile.copy(str(local / "rollout.json"), f"{remote}/rollout.json", overwrite=True)
    events = TestStream().advance_watermark_to(0).add_elements(
        [TimestampedValue(event(r, str(i), 10 + i), 10 + i) for i, r in enumerate(rows[:4])]
    ).advance_watermark_to_infinity()
    found = run_test_stream(events, serving, tmp_path / "out", config_dir=remote)
    assert found == {"events": 4, "predictions": 4, "dead_letters": 0}
    assert set(predictions(tmp_path / "out")["probability"]) == {0.4}
    assert stream.main(["--pubsub-subscription", "projects/p/subscriptions/s",
                        "--bigquery-table", "p:d.t", "--serving-dir", str(serving),
                        "--config-dir", str(local)]) == 2
    assert "cannot read --config-dir" in capsys.readouterr().err
