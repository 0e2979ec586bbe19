"""Imported by pytest before any test module: selects Keras 2 before TensorFlow is imported."""

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 and quiets TensorFlow's C++ logs)
