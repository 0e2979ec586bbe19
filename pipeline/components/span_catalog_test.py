"""The span catalog: what SpanWindow and DriftCheck read on Vertex."""

from tfx.types import standard_artifacts

from pipeline.components import span_catalog


def examples(tmp_path, span: int, name: str, version: int = 0):
    artifact = standard_artifacts.Examples()
    artifact.uri = str(tmp_path / name)
    (tmp_path / name).mkdir()
    artifact.span = span
    artifact.version = version
    artifact.split_names = '["train", "eval"]'
    return artifact


def test_the_newest_artifact_of_each_older_span_newest_span_first(tmp_path):
    catalog = str(tmp_path / "catalog")
    for span, name, version in [(1, "a", 0), (2, "b", 0), (2, "b2", 1), (3, "c", 0),
                                (4, "d", 0)]:
        span_catalog.record(catalog, span_catalog.EXAMPLES, examples(tmp_path, span, name,
                                                                     version))
    found = span_catalog.newest_before(catalog, span_catalog.EXAMPLES, 4, 2,
                                       standard_artifacts.Examples)
    assert [(a.span, a.uri) for a in found] == [(3, str(tmp_path / "c")),
                                                (2, str(tmp_path / "b2"))]
    assert found[0].split_names == '["train", "eval"]'
    assert span_catalog.newest_before(catalog, span_catalog.EXAMPLES, 1, 5,
                                      standard_artifacts.Examples) == []


def test_a_span_whose_files_are_gone_is_skipped_not_read(tmp_path, caplog):
    catalog = str(tmp_path / "catalog")
    span_catalog.record(catalog, span_catalog.EXAMPLES, examples(tmp_path, 1, "a"))
    span_catalog.record(catalog, span_catalog.EXAMPLES, examples(tmp_path, 2, "b"))
    (tmp_path / "b").rmdir()
    found = span_catalog.newest_before(catalog, span_catalog.EXAMPLES, 3, 2,
                                       standard_artifacts.Examples)
    assert [a.span for a in found] == [1]
    assert "of span 2 is gone" in caplog.text
