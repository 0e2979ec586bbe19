"""Vertex AI's prebuilt prediction containers, as the Vertex SDK in our lock lists them.

A wrong serving image fails at deploy, after the whole pipeline has run and been paid for,
so the config check refuses one the SDK does not list. The list is read from the SDK's own
constants file without importing the SDK (slow to import).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

PREBUILT = re.compile(r"^(us|europe|asia)-docker\.pkg\.dev/vertex-ai/prediction/")
TF_CPU = re.compile(r"/tf2-cpu\.2-(\d+):latest$")


@functools.cache
def prebuilt_prediction_images() -> tuple[str, ...]:
    spec = importlib.util.find_spec("google.cloud.aiplatform")
    if spec is None or not spec.submodule_search_locations:
        return ()
    path = Path(list(spec.submodule_search_locations)[0]) / "constants" / "prediction.py"
    module_spec = importlib.util.spec_from_file_location("_aiplatform_prediction", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return tuple(module.SERVING_CONTAINER_URIS)


def multi_region(region: str) -> str:
    """The Artifact Registry multi-region the prebuilt images are served from for `region`."""
    if region.startswith("europe"):
        return "europe"
    if region.startswith(("asia", "australia", "me-")):
        return "asia"
    return "us"


def default_serving_image(region: str) -> str:
    """The newest TensorFlow CPU prediction image the SDK lists, nearest to `region`."""
    prefix = f"{multi_region(region or 'us-central1')}-docker.pkg.dev/"
    tf_images = [(int(m.group(1)), image) for image in prebuilt_prediction_images()
                 if image.startswith(prefix) and (m := TF_CPU.search(image))]
    return max(tf_images)[1] if tf_images else ""


def serving_image_problem(image: str) -> str | None:
    """Why `image` would fail at deploy, or None. Custom images (your own registry) pass."""
    if not PREBUILT.match(image) or image in prebuilt_prediction_images():
        return None
    return (f"serving_image {image!r} is not one of Vertex AI's prebuilt prediction "
            f"containers (google-cloud-aiplatform's list); the newest TensorFlow one is "
            f"{default_serving_image('us-central1')!r}")
