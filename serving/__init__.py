"""TF Serving: models.config and rollouts, a client, and a local TF-Serving-compatible server."""

import models  # noqa: F401  (Keras 2 before TensorFlow, for every entry point here)
