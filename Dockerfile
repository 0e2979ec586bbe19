# The pipeline image for Vertex AI Pipelines: TFX 1.16's official image plus this project's
# code, installed from the same lock as local set-up (so Vertex runs what the tests ran).
# Built by cloudbuild.yaml; `docker build -t IMAGE .` works too.
FROM gcr.io/tfx-oss-public/tfx:1.16.0

WORKDIR /pipeline

# The locked dependency set first, so code changes do not reinstall it.
COPY requirements.lock ./
RUN python -m pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --require-hashes --no-cache -r requirements.lock

# The project's code. Components find it by dotted path (models.model.run_fn, ...), so
# nothing is resolved from a module file at run time. The schema lives at /pipeline/schema,
# which is what the `vertex` profile's schema_dir points at.
COPY pyproject.toml README.md ./
COPY models ./models
COPY pipeline ./pipeline
COPY serving ./serving
COPY console ./console
COPY data/__init__.py data/bundled.py ./data/
COPY schema ./schema
COPY vertex_runner.py local_runner.py ./
RUN uv pip install --system --no-deps --no-build-isolation --no-cache -e .

# TFX 1.16 needs Keras 2; models/__init__.py sets this too, but the Beam workers on
# Dataflow and Vertex Training jobs should not depend on import order.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONPATH=/pipeline
