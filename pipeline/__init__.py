"""The pipeline: one configuration, one DAG, for the local runner, Vertex and the notebook."""

import importlib
from typing import Any

import models  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)

# Custom artifact types, by the name they carry in MLMD and in a compiled Vertex spec.
# Vertex's container entrypoint turns a schema title `namespace.Name` back into a class by
# importing module `namespace` and reading its attribute `Name`, and the compiler accepts
# only titles of that form: so the titles are `pipeline.<Name>`, resolved here lazily (this
# package stays light to import).
ARTIFACT_TYPES = {
    "RunReport": ("pipeline.components.run_report", "RunReportPage"),
    "EdgeModel": ("pipeline.components.edge_export", "EdgeModel"),
}


def __getattr__(name: str) -> Any:
    if name in ARTIFACT_TYPES:
        module, attribute = ARTIFACT_TYPES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
