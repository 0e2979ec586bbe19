"""The serving check on a real exported model and real eval rows, probed in a real subprocess."""

import json

import pytest
import tensorflow as tf

from data import bundled
from models import features as F
from pipeline.components.safe_to_serve import REPORT_FILE, check
from serving import payloads


def to_example(row: dict) -> bytes:
    """A CSV row as ExampleGen writes it: typed features, empty lists for absent values."""
    feature = {}
    for f in F.FEATURES:
        value = row.get(f.name, "")
        if f.dtype == "string":
            feature[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[value.encode()] if value else []))
        elif f.dtype == "int":
            feature[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(
                value=[int(float(value))] if value else []))
        else:
            feature[f.name] = tf.train.Feature(float_list=tf.train.FloatList(
                value=[float(value)] if value else []))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def examples_uri(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    _, rows = bundled.read_rows(bundled.materialize())
    (root / "Split-eval").mkdir()
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(root / "Split-eval" / "data.gz"), options) as writer:
        for row in rows[:40]:
            writer.write(to_example(row))
    return str(root)


def test_a_servable_model_is_blessed_and_carries_warmup_requests(
        exported_models, examples_uri, tmp_path):
    report = check(exported_models[0], examples_uri, str(tmp_path), "taxi-big-tipper",
                   warmup_requests=16, latency_p99_budget_ms=5000, memory_budget_mib=8192)
    assert report["blessed"], report["reasons"]
    figures = report["figures"]
    assert figures["requests"] == 16 and figures["timed_calls"] == 48
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["peak_rss_mib"] > 100  # TensorFlow and a model: measured, not zero
    saved = json.loads((tmp_path / REPORT_FILE).read_text())
    assert saved["blessed"] is True
    # The stamped copy is what gets pushed: TF Serving replays its warmup file on load.
    warmup = payloads.read_warmup(str(tmp_path / "stamped_model" / payloads.WARMUP_FILE))
    assert len(warmup) == 16 and warmup[0].model_spec.signature_name == "serving_default"
    model = tf.saved_model.load(str(tmp_path / "stamped_model"))
    answer = model.signatures["serving_default"](**payloads.request_tensors(warmup[0]))
    assert answer["probabilities"].shape == (1,)


def test_budgets_decide_and_the_reason_names_the_setting(exported_models, examples_uri, tmp_path):
    report = check(exported_models[0], examples_uri, str(tmp_path), "taxi-big-tipper",
                   warmup_requests=8, latency_p99_budget_ms=0.001, memory_budget_mib=1)
    assert not report["blessed"]
    assert any("latency_p99_budget_ms" in r for r in report["reasons"])
    assert any("memory_budget_mib" in r for r in report["reasons"])


def test_a_model_that_cannot_load_is_not_blessed(examples_uri, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    report = check(str(broken), examples_uri, str(tmp_path / "out"), "taxi-big-tipper",
                   warmup_requests=4, latency_p99_budget_ms=100, memory_budget_mib=4096)
    assert not report["blessed"] and "failed to load" in report["reasons"][0]
