"""BigQuery, replaced at its network boundary by local rows (offline runs and tests only).

TFX's BigQueryExampleGen executor asks `google.cloud.bigquery.Client` for the query's
result schema (`SELECT * FROM (query) LIMIT 0`) and reads the rows with Beam's
`ReadFromBigQuery`; everything after that (row to tf.Example, splits, writing) is TFX's own
code. `install(rows_csv, record_dir)` rebinds those two names to:

- a client whose query job answers the schema of the local rows, typed as BigQuery types
  them (INTEGER / FLOAT / STRING from schema/schema.pbtxt's types);
- a read that yields the local rows as BigQuery's rows (dicts, NULL for an empty cell).

Both refuse a query with an unfilled span placeholder, as BigQuery does ("Query parameter
... not found"), and record each query they receive in `record_dir/queries.jsonl`, so a
test can check the span's time range reached the warehouse.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

ROWS_ENV = "TAXI_OFFLINE_BIGQUERY_ROWS"
PLACEHOLDER = re.compile(r"@span_\w+")
BIGQUERY_TYPES = {"INT": "INTEGER", "FLOAT": "FLOAT", "BYTES": "STRING"}


class QueryError(RuntimeError):
    """What BigQuery answers to a query it cannot run (google.api_core's BadRequest)."""


def _check(query: str, record_dir: Path) -> None:
    record_dir.mkdir(parents=True, exist_ok=True)
    with (record_dir / "queries.jsonl").open("a") as f:
        f.write(json.dumps({"query": query}) + "\n")
    unfilled = PLACEHOLDER.findall(query)
    if unfilled:
        raise QueryError(f"400 Query parameter '{unfilled[0][1:]}' not found")


def _types(header: list[str]) -> dict[str, str]:
    from pipeline.components.arrow_example_gen import schema_types
    from settings.layout import SCHEMA_FILE

    types = schema_types(str(SCHEMA_FILE))
    return {name: BIGQUERY_TYPES.get(types.get(name, "BYTES"), "STRING") for name in header}


def read_rows(path: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The CSV's rows as BigQuery returns them: typed values, None for an empty cell."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        types = _types(list(reader.fieldnames or []))
        cast = {"INTEGER": int, "FLOAT": float, "STRING": str}
        rows = [{k: (cast[types[k]](v) if v != "" else None) for k, v in row.items()}
                for row in reader]
    return types, rows


def install(rows_csv: str, record_dir: str) -> None:
    import apache_beam as beam
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from google.cloud import bigquery

    record = Path(record_dir)

    class Field:
        def __init__(self, name: str, field_type: str):
            self.name, self.field_type = name, field_type

    class Job:
        def __init__(self, query: str):
            _check(query, record)
            types, _ = read_rows(rows_csv)
            self.schema = [Field(n, t) for n, t in types.items()]

        def result(self) -> Job:
            return self

    class Client:
        def __init__(self, project: str | None = None, **_: Any):
            self.project = project

        def query(self, query: str, **_: Any) -> Job:
            return Job(query)

    class ReadFromBigQuery(beam.PTransform):
        def __init__(self, query: str | None = None, **_: Any):
            super().__init__()
            self._query = query

        def expand(self, pbegin):
            _check(self._query or "", record)
            _, rows = read_rows(rows_csv)
            return pbegin | beam.Create(rows, reshuffle=False)

    bigquery.Client = Client
    beam_bigquery.ReadFromBigQuery = ReadFromBigQuery


EXECUTOR_MODULE = "tfx.extensions.google_cloud_big_query.example_gen.executor"


def install_on_import(offline_root: str) -> None:
    """In an offline task's process: once TFX's BigQuery executor is imported (only the
    ExampleGen task of a BigQuery run imports it), local rows from
    TAXI_OFFLINE_BIGQUERY_ROWS (default: the bundled CSV), queries recorded under the
    offline root."""
    from pipeline.orchestration.vertex_boundary import after_import

    def patch(_module) -> None:  # noqa: ANN001
        rows = os.environ.get(ROWS_ENV)
        if not rows:
            from data import bundled

            rows = str(bundled.materialize())
        install(rows, os.path.join(offline_root, "bigquery"))

    after_import(EXECUTOR_MODULE, patch)
