"""Loaded by Python at start-up in the processes of an offline Vertex run only (this folder
is on their PYTHONPATH, nowhere else): swaps the Vertex API clients for local ones when the
SDK is imported. See pipeline/orchestration/vertex_boundary.py."""

import os

if os.environ.get("TAXI_OFFLINE_VERTEX_ROOT"):
    from pipeline.orchestration import vertex_boundary

    vertex_boundary.install()
