"""The documented SchemaGen bootstrap writes an inferred schema for review, never over schema/."""

import tempfile

from data import bundled
from models import features as F
from tools import bootstrap_schema


def test_infers_a_schema_with_every_column_for_review(tmp_path, monkeypatch):
    bundled.write_sample(bundled.materialize(), tmp_path / "data", 300, seed=1)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    path = bootstrap_schema.infer(str(tmp_path / "data"), tmp_path / "out")
    assert not list((tmp_path / "tmp").glob("*/build/tfx/dist/*"))  # no TFX sdist built
    inferred = F.load_schema(path)
    names = {f.name for f in inferred.feature}
    assert {f.name for f in F.FEATURES} | {F.LABEL_SOURCE} <= names
    assert not inferred.default_environment  # environments are a curated-only addition


def test_refuses_to_overwrite_the_curated_schema(capsys):
    assert bootstrap_schema.main(["--out", str(F.SCHEMA_FILE.parent)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
