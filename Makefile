# Every target creates the environment it needs (scripts/bootstrap.sh is a no-op when .venv matches the lock).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help env run vertex-offline data test test-fast lint lock bench bench-serving bench-warm-start bench-tflite bench-input bench-scale bench-cache bench-distributed bench-faults clean

help:
	@echo "make run    - set up .venv if needed, materialize the bundled data, run the local pipeline (ARGS='--help' for options)"
	@echo "make test   - set up .venv if needed, run the whole test suite (PYTEST_ARGS='-k name' to narrow)"
	@echo "make test-fast - every test but those that run a whole pipeline, a compiled job or a cluster (minutes)"
	@echo "make vertex-offline - compile the Vertex pipeline and run the compiled job here (ARGS for settings)"
	@echo "make lint   - ruff check, and import-linter's layer contracts (pyproject.toml)"
	@echo "make lock   - regenerate requirements.lock from requirements.txt"
	@echo "make bench  - end-to-end benchmark against TFX's own taxi example"
	@echo "make bench-serving - serving latency: in-process vs the local REST server"
	@echo "make bench-warm-start - validation AUC per step, warm vs cold start on a new span"
	@echo "make bench-tflite - TFLite export: size, AUC loss and single-row latency vs the SavedModel"
	@echo "make bench-input - the Trainer's tf.data input vs the read-and-parse limit"
	@echo "make bench-scale - the pipeline on 15k, 100k and 1M simulated rows: time and memory per component"
	@echo "make bench-cache - Transform per span with and without the span-keyed analyzer cache"
	@echo "make bench-distributed - the Trainer under each tf.distribute strategy: examples/s, step cost, AUC"
	@echo "make bench-faults - a killed worker or chief: steps lost and time added at two backup intervals"
	@echo "make env    - only create/update .venv"

env:
	@VENV=$(VENV) bash scripts/bootstrap.sh

data: env
	$(PY) -m data.bundled materialize

run: data
	$(PY) local_runner.py $(ARGS)

vertex-offline: data
	$(PY) vertex_runner.py --offline $(ARGS)

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

lock:
	@VENV=$(VENV) bash scripts/bootstrap.sh --lock

bench: data
	$(PY) benchmarks/e2e_vs_tfx_example.py $(ARGS)

bench-serving: data
	$(PY) benchmarks/serving_latency.py $(ARGS)

bench-warm-start: data
	$(PY) benchmarks/warm_start.py $(ARGS)

bench-tflite: data
	$(PY) benchmarks/tflite.py $(ARGS)

bench-input: data
	$(PY) benchmarks/training_input.py $(ARGS)

bench-scale: data
	$(PY) benchmarks/scale.py --rows 15000,100000,1000000 $(ARGS)

bench-cache: data
	$(PY) benchmarks/analyzer_cache.py $(ARGS)

bench-distributed: data
	$(PY) benchmarks/distributed_training.py $(ARGS)

bench-faults: data
	$(PY) benchmarks/fault_tolerance.py $(ARGS)

clean:
	rm -rf outputs .pytest_cache
