"""PredictionsExport: BulkInferrer's output examples -> a table that joins back on the key.

BulkInferrer writes tf.Examples that carry every input column plus the prediction. People
and downstream jobs want a table: this writes the key column (every input column when no
key is configured) and the probability, as Parquet or CSV inside its output artifact, and on
Vertex also appends it to a BigQuery table. BulkInferrer writes nothing when the candidate
was not blessed; then this records zero rows and says why, rather than failing the run.
"""

import json
import logging
import os

import pandas as pd
from tfx.dsl.component.experimental.annotations import (
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts

from reporting.artifacts import PREDICTIONS_SUMMARY_FILE

log = logging.getLogger(__name__)

PREDICTION_COLUMN = "probability"
FORMATS = ("parquet", "csv")


def read_predictions(examples_uri: str, splits: list[str]) -> pd.DataFrame:
    """Every record of `splits` as one row per example (first value of each feature)."""
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    frames = []
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    for split in splits:
        files = sorted(fileio.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
        if not files:
            continue
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(50_000)
        for batch in dataset.as_numpy_iterator():
            table = decoder.DecodeBatch(list(batch)).to_pandas()
            frames.append(table.apply(lambda column: column.map(_first)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _first(values):
    if values is None or len(values) == 0:
        return None
    value = values[0]
    return value.decode() if isinstance(value, bytes) else value


def select_columns(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    if PREDICTION_COLUMN not in frame:
        raise ValueError(f"no {PREDICTION_COLUMN!r} column in BulkInferrer's output; "
                         f"columns: {sorted(frame)}")
    if not key:
        return frame[[c for c in frame if c != PREDICTION_COLUMN] + [PREDICTION_COLUMN]]
    if key not in frame:
        raise ValueError(f"inference_key {key!r} is not a column of the inference data; "
                         f"columns: {sorted(c for c in frame if c != PREDICTION_COLUMN)}")
    return frame[[key, PREDICTION_COLUMN]]


def write_bigquery(frame: pd.DataFrame, table: str, client=None) -> None:
    """Appends `frame` to `table` (project.dataset.table); `client` is injectable for tests."""
    if client is None:
        from google.cloud import bigquery

        client = bigquery.Client(project=table.split(".")[0])
    from google.cloud.bigquery import LoadJobConfig, WriteDisposition

    job = client.load_table_from_dataframe(
        frame, table, job_config=LoadJobConfig(write_disposition=WriteDisposition.WRITE_APPEND))
    job.result()


@component
def PredictionsExport(
    inferred: InputArtifact[standard_artifacts.Examples],
    predictions: OutputArtifact[standard_artifacts.InferenceResult],
    key: Parameter[str] = "",
    file_format: Parameter[str] = "parquet",
    bigquery_table: Parameter[str] = "",
) -> None:
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {FORMATS}, got {file_format!r}")
    splits = artifact_utils.decode_split_names(inferred.split_names or "[]")
    frame = select_columns(read_predictions(inferred.uri, splits), key)
    summary = {"rows": len(frame), "key": key or "(every input column)", "format": file_format}
    if frame.empty:
        summary["note"] = "no predictions: the candidate was not blessed, or no input rows"
        log.warning("PredictionsExport: %s", summary["note"])
    else:
        path = os.path.join(predictions.uri, f"predictions.{file_format}")
        local = path if "://" not in path else os.path.join("/tmp", f"predictions.{file_format}")
        getattr(frame, "to_parquet" if file_format == "parquet" else "to_csv")(local, index=False)
        if local != path:
            fileio.copy(local, path, overwrite=True)
        summary["file"] = path
        if bigquery_table:
            write_bigquery(frame, bigquery_table)
            summary["bigquery_table"] = bigquery_table
        log.info("PredictionsExport: %d predictions -> %s", len(frame), path)
    with fileio.open(os.path.join(predictions.uri, PREDICTIONS_SUMMARY_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2))
    predictions.set_int_custom_property("rows", len(frame))
