"""Fixtures the serving tests share."""

import pytest

from data import bundled
from models import features as F


@pytest.fixture(scope="module")
def rows():
    """Real raw rows from the bundled data, as a caller would send them (no tip)."""
    _, all_rows = bundled.read_rows(bundled.materialize())
    return [{k: v for k, v in r.items() if k != F.LABEL_SOURCE} for r in all_rows[:64]]
