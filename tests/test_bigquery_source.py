"""BigQuery as a source: TFX's own query driver and BigQueryExampleGen executor, run here with
only the warehouse replaced by local rows (pipeline/orchestration/bigquery_boundary.py)."""

from __future__ import annotations

import datetime
import glob
import json

import pytest
import tensorflow as tf
from tfx.components.example_gen import driver
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.extensions.google_cloud_big_query.example_gen import executor as bigquery_executor
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as keys

import vertex_runner
from data import bundled
from pipeline import configs
from pipeline import pipeline as dag
from pipeline.orchestration import bigquery_boundary

QUERY = """SELECT * FROM `bigquery-public-data.chicago_taxi_trips.taxi_trips`
WHERE trip_start_timestamp >= TIMESTAMP_SECONDS(@span_begin_timestamp)
  AND trip_start_timestamp < TIMESTAMP_SECONDS(@span_end_timestamp)"""
SPAN = 16071  # 2014-01-01
ROWS = 400


def _begin_end(span: int) -> tuple[int, int]:
    begin = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) \
        + datetime.timedelta(days=span)
    return int(begin.timestamp()), int(begin.timestamp()) + 86400


@pytest.fixture()
def rows(tmp_path):
    bundled.write_sample(bundled.materialize(), tmp_path / "rows", ROWS, seed=5)
    return tmp_path / "rows" / "data.csv"


def test_a_span_query_is_filled_by_tfxs_driver_and_read_by_its_executor(rows, tmp_path):
    config = configs.load(env={}, bigquery_query=QUERY, span=SPAN, gcp_project="demo",
                          dataflow_temp_location="gs://demo-bucket/tmp",
                          output_root=str(tmp_path / "out"))
    component = dag.create_components(config)[0]
    assert component.id == "ExampleGen" and type(component).__name__ == "BigQueryExampleGen"
    properties = dict(component.exec_properties)  # protos as JSON, as MLMD records them
    properties = driver.QueryBasedDriver(None).resolve_exec_properties(properties, None, None)
    assert properties["span"] == SPAN
    begin, end = _begin_end(SPAN)
    assert f"TIMESTAMP_SECONDS({begin})" in properties[keys.INPUT_CONFIG_KEY]
    assert f"TIMESTAMP_SECONDS({end})" in properties[keys.INPUT_CONFIG_KEY]

    bigquery_boundary.install(str(rows), str(tmp_path / "warehouse"))
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    bigquery_executor.Executor(BaseBeamExecutor.Context(
        beam_pipeline_args=config.beam_pipeline_args)).Do(
        {}, {keys.EXAMPLES_KEY: [examples]}, properties)
    counts = {split: sum(1 for _ in tf.data.TFRecordDataset(
        glob.glob(f"{examples.uri}/Split-{split}/*"), compression_type="GZIP"))
        for split in ("train", "eval")}
    assert sum(counts.values()) == ROWS and counts["eval"] > 0
    queries = [json.loads(line)["query"] for line in
               (tmp_path / "warehouse" / "queries.jsonl").read_text().splitlines()]
    assert queries and all(f"TIMESTAMP_SECONDS({begin})" in q for q in queries)
    one = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
        glob.glob(f"{examples.uri}/Split-train/*"), compression_type="GZIP"))).numpy())
    assert one.features.feature["fare"].float_list.value  # typed as BigQuery types it


def test_an_unfilled_placeholder_is_refused_as_bigquery_refuses_it(rows, tmp_path):
    bigquery_boundary.install(str(rows), str(tmp_path / "warehouse"))
    from google.cloud import bigquery

    with pytest.raises(bigquery_boundary.QueryError, match="span_begin_timestamp"):
        bigquery.Client(project="demo").query(QUERY)


@pytest.mark.parametrize("settings, problem", [
    ({"bigquery_query": QUERY, "gcp_project": "p",
      "dataflow_temp_location": "gs://b/tmp"}, "choose the span with --span N"),
    ({"bigquery_query": "SELECT 1", "span": 1}, "bigquery_query needs gcp_project"),
    ({"bigquery_query": "SELECT 1", "gcp_project": "p"}, "needs a gs:// dataflow_temp_location"),
])
def test_a_bigquery_source_missing_what_it_needs_is_refused(settings, problem):
    with pytest.raises(configs.ConfigError, match=problem):
        configs.load(env={}, **settings)


def test_vertex_compiles_the_chosen_spans_query_without_a_data_root(tmp_path):
    out = tmp_path / "pipeline.json"
    assert vertex_runner.main([
        "--gcp-project", "demo", "--gcp-region", "us-central1", "--image",
        "us-docker.pkg.dev/demo/taxi/pipeline:1", "--output-root", "gs://demo-bucket/taxi",
        "--bigquery-query", QUERY, "--span", str(SPAN), "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    assert "ExampleGen" in spec["pipelineSpec"]["root"]["dag"]["tasks"]
    text = out.read_text()
    begin, end = _begin_end(SPAN)
    assert f"TIMESTAMP_SECONDS({begin})" in text and f"TIMESTAMP_SECONDS({end})" in text
    assert "@span_" not in text
