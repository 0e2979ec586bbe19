"""Model code: feature spec, the tf.Transform graph, the Keras model and the tuner.

This is the one place that selects Keras 2. TF 2.16 binds `tf.keras` to Keras 3 unless
TF_USE_LEGACY_KERAS=1 is set *before* TensorFlow is imported, and TFX 1.16 (Trainer,
Tuner, TFMA's Keras paths) needs Keras 2 (`tf-keras`). Every entry point imports this
package first: the runners and `pipeline` (which imports it), the tests (conftest.py),
the notebook, and the module files Transform/Trainer/Tuner load by dotted path.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter (CUDA, oneDNN)

if "tensorflow" in sys.modules:
    # TF decided which Keras `tf.keras` means when it was imported; check it chose Keras 2.
    _keras = sys.modules["tensorflow"].keras.__name__
    if not _keras.startswith("tf_keras"):
        raise ImportError(
            f"tensorflow was imported before `models`, and tf.keras is {_keras} (Keras 3); "
            "TFX 1.16 needs Keras 2. Import `models` (or `pipeline`) before tensorflow, or "
            "export TF_USE_LEGACY_KERAS=1 in the environment."
        )

import warnings  # noqa: E402

# The logger of training progress (models/progress.py), named here so that a console can
# listen for it without importing TensorFlow.
PROGRESS_LOGGER = "taxi.progress"

# google-cloud libraries warn on every import that Python 3.10 will stop getting updates;
# TFX 1.16 pins us to 3.10 (see README), so the warning says nothing actionable.
for _message in (".*non-supported Python version.*", ".*google-cloud-storage < 3.0.0.*"):
    warnings.filterwarnings("ignore", message=_message, category=FutureWarning)
