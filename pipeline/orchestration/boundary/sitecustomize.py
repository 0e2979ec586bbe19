"""Loaded by Python at start-up in the processes of an offline Vertex run only (this folder
is on their PYTHONPATH, nowhere else): swaps the Vertex API clients for local ones when the
SDK is imported, and BigQuery for local rows when TFX's BigQuery executor is. See
pipeline/orchestration/vertex_boundary.py and bigquery_boundary.py."""

import os

if os.environ.get("TAXI_OFFLINE_VERTEX_ROOT"):
    from pipeline.orchestration import vertex_boundary

    vertex_boundary.install()
    from pipeline.orchestration import bigquery_boundary

    bigquery_boundary.install_on_import(os.environ["TAXI_OFFLINE_VERTEX_ROOT"])
