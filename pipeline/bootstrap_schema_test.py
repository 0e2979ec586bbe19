"""The documented SchemaGen bootstrap writes an inferred schema for review, never over schema/."""

from data import bundled
from models import features as F
from pipeline import bootstrap_schema


def test_infers_a_schema_with_every_column_for_review(tmp_path):
    bundled.write_sample(bundled.materialize(), tmp_path / "data", 300, seed=1)
    path = bootstrap_schema.infer(str(tmp_path / "data"), tmp_path / "out")
    inferred = F.load_schema(path)
    names = {f.name for f in inferred.feature}
    assert {f.name for f in F.FEATURES} | {F.LABEL_SOURCE} <= names
    assert not inferred.default_environment  # environments are a curated-only addition


def test_refuses_to_overwrite_the_curated_schema(capsys):
    assert bootstrap_schema.main(["--out", str(F.SCHEMA_FILE.parent)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
