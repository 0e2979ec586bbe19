# The pipeline image for Vertex AI Pipelines: TFX 1.16's official image plus this project's
# code, installed from the same lock as local set-up (so Vertex runs what the tests ran).
# Built by cloudbuild.yaml; `docker build -t IMAGE .` works too.
FROM gcr.io/tfx-oss-public/tfx:1.16.0

WORKDIR /pipeline

# The locked dependency set first, so code changes do not reinstall it.
COPY requirements.lock ./
RUN python -m pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --require-hashes --no-cache -r requirements.lock

# The whole project, every package whole: what stays out is listed in .dockerignore (data,
# outputs, tests, notebooks, benchmarks), never what goes in, so a new module cannot be
# missing. Components find the code by dotted path (models.model.run_fn, ...), and the
# `vertex` profile's schema_dir is /pipeline/schema. tests/test_image.py replays these
# lines into a folder and imports every dotted path the compiled jobs name from it alone.
COPY . ./

# TFX 1.16 needs Keras 2; models/__init__.py sets this too, but the Beam workers on
# Dataflow and Vertex Training jobs should not depend on import order.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONPATH=/pipeline
