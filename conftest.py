"""Imported by pytest before any test module: selects Keras 2 before TensorFlow is imported.

Also the fixtures several folders share: a real Transform output of a few rows, and real
exported SavedModels trained on it (the serving tests serve them).
"""

import os

import pytest

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 and quiets TensorFlow's C++ logs)
from data.bundled import first_rows
from models.sample_transform import instance, train_and_export, write_transform


@pytest.fixture(scope="session")
def transform_dir(tmp_path_factory):
    """A Transform output of a few hand-written rows."""
    from models.preprocessing_test import ROWS

    return write_transform(tmp_path_factory.mktemp("transform"), ROWS * 8)


@pytest.fixture(scope="session")
def bundled_transform(tmp_path_factory):
    """(Transform output dir, held-out raw CSV rows): 2,400 bundled rows transformed, the
    600 after them kept raw to score exported models the way a client calls them."""
    rows = first_rows(3000)
    root = write_transform(tmp_path_factory.mktemp("bundled_transform"),
                           [instance(r) for r in rows[:2400]])
    return root, rows[2400:]


@pytest.fixture(scope="session")
def exported_models(transform_dir, tmp_path_factory):
    """Two different SavedModels (as the Pusher would push them as versions 1 and 2)."""
    root = tmp_path_factory.mktemp("exported")
    return [train_and_export(transform_dir, root / "a", steps=3, seed=1),
            train_and_export(transform_dir, root / "b", steps=6, seed=2)]


# The suite runs on every core (pytest-xdist, `-n auto` in pyproject.toml), one module per
# worker at a time (`--dist loadscope`: module fixtures such as a pipeline run are made once).
# The longest modules start first, so none of them is left to run alone at the end.
SLOWEST_FIRST = ("tests/test_vertex_offline.py", "tests/test_pipeline_e2e.py",
                 "tests/test_own_problem.py",
                 "tests/test_dynamic_training.py", "models/distribution_test.py",
                 "models/fault_tolerance_test.py",
                 "serving/stream_test.py", "tests/test_humans.py", "tests/test_leakage.py",
                 "tests/test_notebooks.py", "tests/test_readme.py",
                 "tests/test_bigquery_source.py")
GIB_PER_WORKER = 4  # measured peak of a pipeline test with its subprocesses, plus headroom


# The modules that run a whole pipeline, a compiled job, a cluster or a streaming job: marked
# `slow`, so `make test-fast` (pytest -m "not slow") leaves them out. `make test` and CI run
# every test.
SLOW = (*SLOWEST_FIRST, "tests/test_own_problem.py", "tests/test_bench.py",
        "tests/test_vertex_runner.py",
        "tests/test_kubeflow_runner.py", "tests/test_image.py", "tests/test_quiet_commands.py",
        "tools/backtest_test.py", "tests/test_bootstrap.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return SLOWEST_FIRST.index(path) if path in SLOWEST_FIRST else len(SLOWEST_FIRST)

    for item in items:
        if item.nodeid.split("::")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
    items.sort(key=rank)  # stable: tests keep their order within a module


def pytest_xdist_auto_num_workers(config) -> int:
    """One worker per core, as many as memory holds, at most 4."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError):
        available = GIB_PER_WORKER
    return max(1, min(os.cpu_count() or 1, 4, int(available // GIB_PER_WORKER)))
