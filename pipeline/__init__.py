"""The pipeline: one configuration, one DAG, for the local runner, Vertex and the notebook."""

import models  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
