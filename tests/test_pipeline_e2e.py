"""The real DAG end to end on a sample: real Beam, real MLMD on SQLite, real TensorFlow.

One pipeline root is shared by the tests of this module, in order: a first run that
pushes, a cached rerun, a data set with an anomaly that the gate stops, and a weak
candidate that is not blessed. Each test checks MLMD and the serving directory.
"""

import csv
import glob
import itertools
import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_transform as tft

import local_runner
from data import bundled, simulator
from models import features as F
from models import model as M
from pipeline import configs
from reporting import run_summary, runs, views

SAMPLE_ROWS = 3000
UNLABELLED_ROWS = 400
COMPONENTS = {"ExampleGen", "SpanExamples", "StatisticsGen", "ImportSchemaGen",
              "ExampleValidator", "DriftCheck", "LeakageCheck", "AnomalyGate", "SpanWindow",
              "Transform", "RefitTransform", "Refit", "RefitCheck",
              "Trainer", "latest_blessed_model_resolver", "Evaluator", "SafeToServe", "Pusher",
              "InferenceExampleGen", "BulkInferrer", "PredictionsExport", "EdgeExport",
              "RunReport"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    bundled.write_sample(bundled.materialize(), root / "data", SAMPLE_ROWS, seed=7)
    simulator.write_span(root / "unlabelled", 1, UNLABELLED_ROWS, seed=3, unlabelled=True)
    return root


def make_config(workdir, **overrides):
    settings = dict(data_root=str(workdir / "data"), output_root=str(workdir / "out"),
                    train_steps=400, min_auc=0.85,
                    inference_data_root=str(workdir / "unlabelled" / "span-1"),
                    inference_key=simulator.TRIP_ID, export_tflite=True,
                    report_in_pipeline=True)
    settings.update(overrides)
    return configs.load(env={}, **settings)


@pytest.fixture(scope="module")
def first_run(workdir):
    config = make_config(workdir)
    return config, local_runner.run(config)


def versions(serving_dir):
    return sorted(os.listdir(serving_dir)) if os.path.isdir(serving_dir) else []


def snapshot(serving_dir):
    """Every file under the serving dir with its size and mtime: what 'untouched' means."""
    out = {}
    for path in glob.glob(f"{serving_dir}/**", recursive=True):
        if os.path.isfile(path):
            stat = os.stat(path)
            out[path] = (stat.st_size, stat.st_mtime_ns)
    return out


def output_uri(config, node, artifact_type):
    return runs.newest_output(config.metadata_path, node, artifact_type)


def read_records_plain(path):
    return [r.numpy() for r in tf.data.TFRecordDataset([path])]


def read_records(pattern):
    files = sorted(glob.glob(pattern))
    assert files, pattern
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_first_run_executes_every_component_blesses_and_pushes(first_run):
    config, summary = first_run
    states = {c.node_id: c.state for c in summary.components}
    assert set(states) == COMPONENTS
    assert set(states.values()) == {"ran"}
    assert summary.blessed is True, summary.validation_failures
    assert summary.metrics["auc"] >= config.min_auc
    assert summary.metrics["example_count"] > 0.15 * SAMPLE_ROWS
    pushed = versions(config.serving_dir)
    assert len(pushed) == 1
    assert os.path.isfile(os.path.join(config.serving_dir, pushed[0], "saved_model.pb"))
    assert summary.pushed and summary.pushed_destination.endswith(pushed[0])
    # The pushed copy is SafeToServe's: it carries TF Serving warmup requests from eval rows.
    warmup = os.path.join(config.serving_dir, pushed[0], "assets.extra",
                          "tf_serving_warmup_requests")
    assert len(read_records_plain(warmup)) == config.warmup_requests
    assert summary.safe_to_serve is True
    text = run_summary.format_summary(summary)  # what a person reads at the end of the run
    assert "Data validation: no anomalies" in text and "Blessed: yes" in text
    assert "Safe to serve: yes (p50 " in text
    assert f"Report: {summary.report_path}" in text
    assert f"auc                {summary.metrics['auc']:.4f}   baseline none yet" in text
    assert f"Pushed: {summary.pushed_destination}" in text


def test_the_pushed_model_is_the_refit_which_learned_from_the_evaluation_s_rows(first_run):
    """The Evaluator judged the candidate on the newest rows it never saw; what is pushed is
    the same recipe trained on every row, held to the candidate, carrying both records."""
    from pipeline.components.pusher import model_digest

    config, summary = first_run
    (pushed,) = versions(config.serving_dir)
    served = os.path.join(config.serving_dir, pushed)
    with open(os.path.join(served, "assets.extra", "refit.json")) as f:
        refit = json.load(f)
    assert refit["passed"] and refit["pushed"] == "refit", refit["reasons"]
    rows = refit["refit"]["rows"]
    assert rows["added"] == summary.metrics["example_count"]  # the evaluation's rows
    assert rows["all"] == rows["recipe"] + rows["added"]
    assert refit["refit"]["steps"] == round(config.train_steps * rows["all"] / rows["recipe"])
    assert refit["evaluated"]["out_of_time"]["auc"] == round(summary.metrics["auc"], 6)
    assert refit["disagreement"] < config.refit_max_disagreement
    refit_model = os.path.join(output_uri(config, "Refit", "Model"), "Format-Serving")
    evaluated = os.path.join(output_uri(config, "Trainer", "Model"), "Format-Serving")
    assert model_digest(served) == model_digest(refit_model) != model_digest(evaluated)
    with open(os.path.join(output_uri(config, "Refit", "ModelRun"), "history.json")) as f:
        assert json.load(f)["refit"]["rows"] == rows
    assert summary.refit == refit
    text = run_summary.format_summary(summary)
    assert f"Refit (the blessed recipe on every row): {rows['all']:,} rows" in text
    assert "goes on to be pushed: the refit" in text


def test_every_run_writes_a_self_contained_report_with_what_mlmd_recorded(first_run):
    config, summary = first_run
    with open(summary.report_path, encoding="utf-8") as f:
        page = f.read()
    assert summary.report_path.startswith(config.pipeline_root)
    # Statistics, training curves, AUC by slice: images inside the page, nothing to fetch.
    # Statistics, training curves, AUC by quarter of the trip, AUC by slice.
    assert "<script" not in page and page.count("data:image/png;base64,") == 4
    assert "a random 10% of the training period, held out" in page
    # Metric values as TFMA recorded them for this run (run_summary reads them from MLMD's
    # evaluation artifact on its own path).
    for metric in ("auc", "binary_accuracy", "precision", "example_count"):
        assert f"<td>{summary.metrics[metric]:.4g}</td>" in page, metric
    assert "payment_type=Cash" in page  # by slice
    assert "auc ≥ 0.85" in page and "change vs baseline" in page  # the thresholds that decided
    assert "safe to serve" in page and summary.pushed_destination in page
    assert output_uri(config, "Transform", "TransformGraph") in page  # lineage


def test_report_names_have_no_colons_and_old_named_reports_are_still_listed(first_run,
                                                                             capsys):
    from reporting import report

    config, summary = first_run
    path = Path(summary.report_path)
    assert re.fullmatch(r"\d{8}T\d{6}Z\.html", path.name), path.name
    args = ["--output-root", config.output_root]
    assert report.main([*args, "--run-id", path.stem]) == 0  # found by its file name
    assert capsys.readouterr().out.strip() == str(path)
    old = path.with_name(f"{summary.run_id}.html")  # a report written before the rename
    path.rename(old)
    try:
        assert report.main([*args, "--list"]) == 0
        listed = [line for line in capsys.readouterr().out.splitlines()
                  if line.strip().startswith(summary.run_id)]
        assert len(listed) == 1 and listed[0].endswith(str(old))
    finally:
        old.rename(path)


def test_the_statistics_table_counts_empty_cells_as_missing(first_run):
    """CsvExampleGen writes an empty cell as the feature with no values, which TFDV counts as
    present: the report must still say a third of the trips have no company."""
    config, summary = first_run
    stats_uri = output_uri(config, "StatisticsGen", "ExampleStatistics")
    train = views.load_statistics(f"{stats_uri}/Split-train/FeatureStats.pb")
    frame = views.statistics_frame(train)
    examples_uri = output_uri(config, "SpanExamples", "Examples")
    records = read_records(f"{examples_uri}/Split-train/*")
    empty = sum(not tf.train.Example.FromString(r).features.feature["company"].bytes_list.value
                for r in records)
    share = 100.0 * empty / len(records)
    assert 25 < share < 45  # ~34% in the bundled data
    assert frame.loc["company", "missing %"] == pytest.approx(share)
    assert frame.loc["company", "count"] == len(records) - empty
    assert frame.loc["fare", "missing %"] == 0
    with open(summary.report_path, encoding="utf-8") as f:
        assert f"<td>{share:.4g}</td>" in f.read()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, and quiet on a machine with no network (no background connections, no updates).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# Appended to a copy of the report only: counts the images the browser actually decoded.
IMAGE_PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = `images ${images.length} decoded ${decoded}`;
});</script>"""


def chromium(tmp_path, *args):
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_report_renders_in_headless_chromium_with_every_image_decoded(first_run, tmp_path):
    """Skipped on a developer's machine without Chromium; under CI (which installs it,
    .ci/run) a missing Chromium fails, so the check cannot silently stop running."""
    from PIL import Image

    if CHROMIUM is None:
        why = ("Chromium is not installed: `apt-get install chromium` (Debian, as root; "
               ".ci/run does it) to render the report")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)

    _, summary = first_run
    page = Path(summary.report_path).read_text(encoding="utf-8")
    images = page.count('src="data:image/png;base64,')
    assert images >= 3
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    assert f"<title>images {images} decoded {images}</title>" in dom
    assert "Evaluation" in dom and f"{summary.metrics['auc']:.4g}" in dom

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400",
             Path(summary.report_path).as_uri())
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # text and plots, not a blank or error page


def test_the_report_component_writes_the_same_metrics_from_inside_the_run(first_run):
    """RunReport (the report on Vertex) builds the page from the artifacts it is given, with
    no MLMD file: the same metric values, images and decisions as the runner's report."""
    from reporting.artifacts import REPORT_FILE

    config, summary = first_run
    uri = summary.artifacts["RunReport"]["pipeline.RunReport"]
    page = Path(uri, REPORT_FILE).read_text(encoding="utf-8")
    for metric in ("auc", "binary_accuracy", "precision", "example_count"):
        assert f"<td>{summary.metrics[metric]:.4g}</td>" in page, metric
    # Statistics, training curves, AUC by quarter of the trip, AUC by slice.
    assert "<script" not in page and page.count("data:image/png;base64,") == 4
    assert "a random 10% of the training period, held out" in page
    assert "auc ≥ 0.85" in page and "safe to serve" in page
    assert summary.pushed_destination in page  # it ran after the Pusher
    assert output_uri(config, "Transform", "TransformGraph") in page
    assert "see the run in the Vertex AI console" in page


def raw_rows_for_serving(path, n):
    """The first n rows of a CSV as a REST client would send them (no tip; NaN / '' if absent)."""
    with open(path, newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f), n))
    return M.raw_inputs(rows)


def test_pushed_model_serves_raw_rows_and_examples(first_run, workdir):
    config, _ = first_run
    model = tf.saved_model.load(os.path.join(config.serving_dir, versions(config.serving_dir)[0]))
    raw = raw_rows_for_serving(workdir / "data" / "data.csv", 50)
    by_raw = model.signatures["serving_default"](**raw)[M.PROBABILITY].numpy()
    assert by_raw.shape == (50,)
    assert np.all((by_raw >= 0) & (by_raw <= 1))
    examples = read_records(output_uri(config, "ExampleGen", "Examples") + "/Split-eval/*")
    serving = []
    for record in examples[:50]:  # the SERVING environment: no label source
        example = tf.train.Example.FromString(record)
        del example.features.feature[F.LABEL_SOURCE]
        serving.append(example.SerializeToString())
    by_example = model.signatures["serving_examples"](
        examples=tf.constant(serving))[M.PROBABILITY].numpy()
    assert np.all((by_example >= 0) & (by_example <= 1))
    assert by_example.std() > 0.01  # a model, not a constant


def test_the_monitor_finds_the_served_models_training_rows_through_mlmd(first_run, workdir,
                                                                        tmp_path, capsys):
    from monitoring import monitor

    config, _ = first_run
    (version,) = versions(config.serving_dir)
    with open(workdir / "data" / "data.csv", newline="") as f:
        rows = list(csv.DictReader(f))[::5][:500]  # spread over the data the model saw

    def status(fare_factor: float) -> int:
        log = tmp_path / f"requests-{fare_factor}.jsonl"
        with log.open("w") as out:
            for row in rows:
                features = {k: row[k] for k in F.BY_NAME}
                features["fare"] = f"{float(features['fare']) * fare_factor:.2f}"
                out.write(json.dumps({"version": int(version), "features": features}) + "\n")
        return monitor.main(["--log", str(log), "--out", str(tmp_path / "monitor.html"),
                             "--output-root", config.output_root])

    assert status(1.0) == 0, capsys.readouterr().out
    assert f"model version {version}" in (tmp_path / "monitor.html").read_text()
    assert status(3.0) == 3
    breaches = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith("BREACH")]
    assert breaches and all("feature 'fare' distribution" in b for b in breaches), breaches


def test_batch_inference_scores_every_unlabelled_row_as_the_saved_model_does(first_run, workdir):
    """BulkInferrer's predictions, exported as a table: one per input row, keyed by the
    input's trip_id, equal to what the pushed SavedModel says for the same raw rows."""
    config, summary = first_run
    exported = summary.artifacts["PredictionsExport"]["InferenceResult"]
    frame = pd.read_parquet(os.path.join(exported, "predictions.parquet"))
    with open(workdir / "unlabelled" / "span-1" / "data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(frame.columns) == [simulator.TRIP_ID, "probability"]
    assert len(frame) == len(rows) == UNLABELLED_ROWS
    keys = [row.pop(simulator.TRIP_ID) for row in rows]
    assert sorted(frame[simulator.TRIP_ID]) == sorted(keys)
    assert frame["probability"].between(0, 1).all()
    model = tf.saved_model.load(os.path.join(config.serving_dir, versions(config.serving_dir)[0]))
    expected = model.signatures["serving_default"](**M.raw_inputs(rows))[M.PROBABILITY].numpy()
    by_key = dict(zip(frame[simulator.TRIP_ID], frame["probability"], strict=True))
    np.testing.assert_allclose([by_key[k] for k in keys], expected, rtol=1e-5, atol=1e-6)
    assert f"Batch predictions: {UNLABELLED_ROWS} rows" in run_summary.format_summary(summary)


def test_edge_export_writes_tflite_models_that_predict_raw_rows_as_the_saved_model(first_run,
                                                                                   workdir):
    """EdgeExport's TFLite files take raw rows (Transform graph inside): float equal to the
    pushed SavedModel, quantized within the stated tolerance; its eval check is recorded."""
    from serving.tflite_export import QUANTIZED_ATOL, TFLiteModel

    config, summary = first_run
    edge = summary.edge_model
    assert edge["exported"] is True and edge["within_tolerance"] is True
    assert edge["rows"] == summary.metrics["example_count"]  # the Evaluator's eval split
    # The pushed refit's export, compared on the evaluation's rows, which it trained on: its
    # AUC there is in-sample, above the evaluated model's out-of-time figure, and said so.
    assert edge["refit"] is True and edge["auc"]["saved_model"] > summary.metrics["auc"]
    assert "the refit's, which trained on these rows" in run_summary.format_summary(summary)
    assert edge["auc"]["saved_model"] - edge["auc"]["quantized"] <= config.tflite_max_auc_loss
    assert edge["size_bytes"]["quantized"] < edge["size_bytes"]["float"] / 1.5
    # Rows with absent values and unseen categories, as a device would get them.
    rows = [dict(r) for r in bundled.read_rows(workdir / "data" / "data.csv")[1][:64]]
    rows[0].update(company="", payment_type="Bitcoin", dropoff_census_tract="", trip_seconds="")
    inputs = {k: v.numpy() for k, v in M.raw_inputs(rows).items()}
    model = tf.saved_model.load(os.path.join(config.serving_dir, versions(config.serving_dir)[0]))
    expected = model.signatures["serving_default"](**M.raw_inputs(rows))[M.PROBABILITY].numpy()
    np.testing.assert_allclose(TFLiteModel(edge["files"]["float"]).predict(inputs), expected,
                               rtol=1e-5, atol=1e-6)
    quantized = TFLiteModel(edge["files"]["quantized"]).predict(inputs)
    np.testing.assert_allclose(quantized, expected, atol=QUANTIZED_ATOL)
    assert "TFLite: eval AUC" in run_summary.format_summary(summary)


def test_no_skew_between_what_the_trainer_read_and_the_served_transform_layer(first_run):
    """For the same raw eval rows, the features the pushed model was trained on equal what
    its embedded Transform layer computes (rows paired by their categorical values). The
    pushed model is the refit: the Refit read the raw rows through RefitTransform's graph.
    Locally Transform writes no rows: the Trainer read the raw rows through the graph."""
    config, _ = first_run
    graph_uri, examples = runs.newest_inputs(config.metadata_path, "Refit",
                                                    ("TransformGraph", "Examples"))
    assert graph_uri == output_uri(config, "RefitTransform", "TransformGraph")
    with pytest.raises(FileNotFoundError):
        output_uri(config, "Transform", "Examples")
    graph = tft.TFTransformOutput(graph_uri)
    assert M.examples_are_raw(sorted(glob.glob(examples + "/Split-eval/*")))
    trained = M.transformed_parser(graph, raw=True)(
        tf.constant(read_records(examples + "/Split-eval/*")))
    raw = read_records(output_uri(config, "ExampleGen", "Examples") + "/Split-eval/*")
    model = tf.saved_model.load(os.path.join(config.serving_dir, versions(config.serving_dir)[0]))
    served = model.signatures["transform_features"](examples=tf.constant(raw))
    assert len(raw) == int(trained[F.LABEL_XF].shape[0]) > 100

    names = M.model_input_names()
    ints = [n for n in names if trained[n].dtype == tf.int64] + [F.LABEL_XF]
    floats = [n for n in names if n not in ints]

    def rows(tensors):
        groups = defaultdict(list)
        for i in range(len(raw)):
            key = tuple(int(tensors[n][i]) for n in ints)
            groups[key].append([float(tensors[n][i]) for n in floats])
        return {k: sorted(v) for k, v in groups.items()}

    left, right = rows(trained), rows(served)
    assert left.keys() == right.keys()  # every categorical/bucket value identical
    for key in left:
        np.testing.assert_allclose(left[key], right[key], rtol=1e-5, atol=1e-5)


def test_reruns_with_nothing_new_are_served_from_cache_and_push_no_copy(first_run):
    """As in TFX's penguin e2e test: the second run re-evaluates (the first model is now the
    baseline), the third is cached throughout. Neither adds a served version."""
    config, _ = first_run
    before = snapshot(config.serving_dir)
    second = local_runner.run(config)
    states = {c.node_id: c.state for c in second.components}
    assert set(states) == COMPONENTS
    assert {n for n, s in states.items() if s == "ran"} <= {
        "latest_blessed_model_resolver", "ImportSchemaGen", "DriftCheck", "AnomalyGate",
        "Evaluator", "RefitCheck", "SafeToServe", "Pusher", "BulkInferrer",
        "PredictionsExport", "EdgeExport", "RunReport",
    }  # a new blessing (and a drift baseline): the same model scores and exports again
    assert second.blessed is True and second.pushed is True
    # The same data against the data behind the blessed first model: no distance at all.
    assert "the data behind the last blessed model" in second.drift["baseline"]
    assert second.drift["breached"] == [] and second.drift["features"]
    assert max(r["distance"] for r in second.drift["features"]) == 0
    assert snapshot(config.serving_dir) == before  # the same model is not copied again

    third = local_runner.run(config)
    states = {c.node_id: c.state for c in third.components}
    cached = {n for n, s in states.items() if s == "cached"}
    # Resolvers and importers are look-ups, not work: all the rest is cached.
    assert COMPONENTS - cached <= {"latest_blessed_model_resolver", "ImportSchemaGen"}
    assert {"ExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= cached
    assert snapshot(config.serving_dir) == before


def test_anomaly_stops_the_run_before_transform_and_nothing_is_pushed(first_run, workdir, capsys):
    config, _ = first_run
    bad = workdir / "bad-data"
    header, rows = bundled.read_rows(workdir / "data" / "data.csv")
    for row in rows[:5]:
        row["fare"] = "N/A"  # a string in a numeric column
    for row in rows[5:8]:
        row["trip_miles"] = ""  # a required value left empty: never imputed
    bundled.write_rows(bad / "data.csv", header, rows)
    before = snapshot(config.serving_dir)
    args = ["--data-root", str(bad), "--output-root", str(workdir / "out"),
            "--train-steps", "400", "--min-auc", "0.85"]
    assert local_runner.main(args) == 2
    err = capsys.readouterr().err
    assert "run stopped by data validation" in err
    with open(err.split("Report: ")[1].split()[0], encoding="utf-8") as f:
        assert "feature &#x27;fare&#x27;" in f.read()  # the report names the anomaly too
    assert "feature 'fare'" in err and "FLOAT" in err
    assert "feature 'trip_miles'" in err and "a required column has empty cells" in err
    latest = runs.summarize(config.metadata_path, config.pipeline_name)
    states = {c.node_id: c.state for c in latest.components}
    assert states["AnomalyGate"] == "FAILED"
    assert not {"Transform", "RefitTransform", "Pusher"} & set(states)
    assert snapshot(config.serving_dir) == before


def test_a_csv_with_only_a_header_stops_at_the_gate(first_run, workdir, capsys):
    config, _ = first_run
    empty = workdir / "empty-data"
    header, _ = bundled.read_rows(workdir / "data" / "data.csv")
    bundled.write_rows(empty / "data.csv", header, [])
    (empty / "more.csv").write_bytes(b"")  # a 0-byte file: no rows either
    args = ["--data-root", str(empty), "--output-root", str(workdir / "out")]
    assert local_runner.main(args) == 2
    err = capsys.readouterr().err
    assert "run stopped by data validation" in err and "no rows: the input is empty" in err
    states = {c.node_id: c.state for c in runs.summarize(
        config.metadata_path, config.pipeline_name).components}
    assert states["AnomalyGate"] == "FAILED" and "Trainer" not in states


def test_shifted_data_in_the_flat_layout_stops_at_the_drift_check(first_run, workdir, capsys):
    """No spans, no previous span: the new file is compared with the data behind the blessed
    model, so fares written in cents instead of dollars stop the run before training."""
    config, _ = first_run
    shifted = workdir / "cents-data"
    header, rows = bundled.read_rows(workdir / "data" / "data.csv")
    for row in rows:
        row["fare"] = f"{float(row['fare']) * 100:.2f}"
    bundled.write_rows(shifted / "data.csv", header, rows)
    before = snapshot(config.serving_dir)
    args = ["--data-root", str(shifted), "--output-root", str(workdir / "out")]
    assert local_runner.main(args) == 2
    err = capsys.readouterr().err
    assert "drift beyond the schema's thresholds in 1 feature" in err
    assert "feature 'fare': Jensen-Shannon" in err
    assert "the data behind the last blessed model" in err
    latest = runs.summarize(config.metadata_path, config.pipeline_name)
    states = {c.node_id: c.state for c in latest.components}
    assert states["AnomalyGate"] == "FAILED" and "Trainer" not in states
    assert latest.drift["breached"] == ["fare"]
    assert snapshot(config.serving_dir) == before


def test_a_workbook_saved_as_csv_stops_with_one_line_naming_it(first_run, workdir, capsys):
    config, _ = first_run
    before = snapshot(config.serving_dir)
    bad = workdir / "workbook-data"
    bad.mkdir()
    shutil.copy(workdir / "data" / "data.csv", bad / "a.csv")
    (bad / "b.csv").write_bytes(b"PK\x03\x04" + bytes(200))  # an .xlsx renamed
    args = ["--data-root", str(bad), "--output-root", str(workdir / "out")]
    assert local_runner.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"local_runner: run stopped: the input cannot be read: {bad / 'b.csv'}: "
                       "a zip archive or an Excel workbook (.xlsx), not CSV: save the sheet "
                       "as CSV")
    assert snapshot(config.serving_dir) == before


def test_a_weaker_candidate_is_not_blessed_and_not_pushed(first_run, workdir):
    config, first = first_run
    before = snapshot(config.serving_dir)
    summary = local_runner.run(make_config(workdir, train_steps=1))
    states = {c.node_id: c.state for c in summary.components}
    assert states["Trainer"] == "ran" and states["Evaluator"] == "ran"
    assert summary.blessed is False
    assert summary.baseline_metrics["auc"] == pytest.approx(first.metrics["auc"], abs=1e-6)
    assert any("change vs baseline" in f for f in summary.validation_failures), \
        summary.validation_failures
    assert summary.safe_to_serve is False  # not checked: the Evaluator said no first
    assert "not blessed by the Evaluator" in summary.safe_to_serve_detail
    assert summary.pushed is False
    assert snapshot(config.serving_dir) == before
    # Batch inference takes the blessed candidate only: this one scores nothing.
    assert summary.batch_predictions["rows"] == 0
    assert summary.edge_model["exported"] is False  # nor is it exported for the edge


def test_tuner_best_hyperparameters_feed_the_trainer(workdir):
    """With tuning on, the Trainer trains with what the Tuner found (read back from both)."""
    config = make_config(workdir, output_root=str(workdir / "tuned"), enable_tuning=True,
                         tuner_trials=2, tuner_steps=30, train_steps=30, min_auc=0.0,
                         safe_to_serve=False, inference_data_root="",
                         export_tflite=False, report_in_pipeline=False, refit=False)
    summary = local_runner.run(config)
    states = {c.node_id: c.state for c in summary.components}
    assert states["Tuner"] == "ran" and states["Trainer"] == "ran"
    # With the serving check off, the Pusher takes the Trainer's model and one blessing.
    assert "SafeToServe" not in states and summary.pushed is True
    best_dir = output_uri(config, "Tuner", "HyperParameters")
    with open(glob.glob(f"{best_dir}/*.txt")[0]) as f:
        best = json.load(f)["values"]
    history = glob.glob(f"{output_uri(config, 'Trainer', 'ModelRun')}/history.json")
    with open(history[0]) as f:
        trained_with = json.load(f)["hparams"]
    for name in ("learning_rate", "hidden_units", "dropout", "embedding_scale", "l2"):
        assert trained_with[name] == best[name], name


def test_ablation_ranks_every_group_and_the_noise_probe_last(first_run, tmp_path):
    """Leave-one-out on what the first run trained on, in parallel: one row per declared
    group plus the pure-noise probe, finite AUC changes, the probe ranked at the bottom."""
    from tools import ablation

    config, _ = first_run
    graph, examples = ablation.latest_training_inputs(config.metadata_path)
    result = ablation.ablate(graph, examples, tmp_path, by="group", steps=300, workers=2)
    ranking = result["ranking"]
    assert sorted(r["unit"] for r in ranking) == sorted([*F.GROUPS, ablation.NOISE_PROBE])
    assert all(np.isfinite(r["auc_change"]) for r in ranking)
    assert ranking[-1]["unit"] == ablation.NOISE_PROBE, ranking
    assert ranking[0]["unit"] == "payment" and ranking[0]["auc_change"] < -0.05  # cash: no tips
    assert result["cost"]["jobs"] == len(F.GROUPS) + 2  # + the baseline
    assert result["cost"]["wall_seconds"] < result["cost"]["job_seconds"]  # ran in parallel
    page = ablation.write_report(result, tmp_path).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1 and "noise_probe" in page


def test_ablation_groups_cover_every_feature_once():
    from tools import ablation

    grouped = [name for names in F.GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(f.name for f in F.FEATURES)
    assert ablation.units("feature")["pickup_latitude"] == [
        "pickup_latitude_xf", "pickup_latitude_bucket_xf"]
    with pytest.raises(ValueError, match="feature or group"):
        ablation.units("column")
