"""Loaded by Python at start-up in the processes of an offline run only (this folder is on
their PYTHONPATH, nowhere else).

- With TAXI_IMAGE_ONLY set, the project is imported from the image's folder on PYTHONPATH
  and nowhere else: the checkout's editable install (a finder that setuptools puts on
  sys.meta_path) is taken off, so a module the image lacks fails to import, as on Vertex.
- With TAXI_OFFLINE_VERTEX_ROOT set, the Vertex API clients are swapped for local ones when
  the SDK is imported, and BigQuery for local rows when TFX's BigQuery executor is
  (pipeline/orchestration/vertex_boundary.py and bigquery_boundary.py).
"""

import os
import sys

if os.environ.get("TAXI_IMAGE_ONLY"):
    def _editable(item) -> bool:
        return "__editable__" in getattr(item, "__module__", "") or "__editable__" in str(item)

    sys.meta_path[:] = [f for f in sys.meta_path if not _editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not _editable(h)]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    sys.path_importer_cache.clear()

if os.environ.get("TAXI_OFFLINE_VERTEX_ROOT"):
    from pipeline.orchestration import vertex_boundary

    vertex_boundary.install()
    from pipeline.orchestration import bigquery_boundary

    bigquery_boundary.install_on_import(os.environ["TAXI_OFFLINE_VERTEX_ROOT"])
