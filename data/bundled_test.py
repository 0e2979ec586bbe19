"""Materializing, verifying and cutting the bundled sample: real files, no mocks."""

import json

import pytest

from data import bundled


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return bundled.materialize(tmp_path_factory.mktemp("raw"))


def test_materialize_copies_the_exact_bundled_rows(copy):
    assert copy.name == "data.csv"
    assert bundled.count_rows(copy) == bundled.EXPECTED_ROWS == 15_002
    assert bundled.sha256(copy) == bundled.EXPECTED_SHA256


def test_a_corrupted_copy_is_refused_with_what_to_do(tmp_path):
    dest = bundled.materialize(tmp_path)
    with dest.open("a") as f:
        f.write("1,2,3\n")
    with pytest.raises(bundled.DataError, match=r"checksum mismatch .* 15003 rows.*--force"):
        bundled.materialize(tmp_path)
    bundled.materialize(tmp_path, force=True)  # --force restores it
    bundled.verify(dest)


def test_missing_file_names_the_command_to_run(tmp_path):
    with pytest.raises(bundled.DataError, match="does not exist; run `python -m data.bundled"):
        bundled.verify(tmp_path / "data.csv")


def test_spans_by_year_keep_every_row_in_time_order(copy, tmp_path):
    manifest = bundled.write_spans(copy, tmp_path, by="year")
    assert [info["period"] for info in manifest.values()] == ["2013", "2014", "2015", "2016"]
    assert sum(info["rows"] for info in manifest.values()) == bundled.EXPECTED_ROWS
    _, rows = bundled.read_rows(tmp_path / "span-2" / "data.csv")
    assert {bundled.period_of(r["trip_start_timestamp"], "year") for r in rows} == {"2014"}
    saved = json.loads((tmp_path / "spans.json").read_text())
    assert saved["by"] == "year" and saved["spans"]["1"]["rows"] == manifest[1]["rows"]


def test_spans_by_quarter(copy, tmp_path):
    manifest = bundled.write_spans(copy, tmp_path, by="quarter")
    assert manifest[1]["period"] == "2013-Q1"
    assert len(manifest) == 16
    assert sum(info["rows"] for info in manifest.values()) == bundled.EXPECTED_ROWS


def test_sample_is_reproducible_and_bounded(copy, tmp_path):
    a = bundled.write_sample(copy, tmp_path / "a", 100, seed=3)
    b = bundled.write_sample(copy, tmp_path / "b", 100, seed=3)
    assert a.read_text() == b.read_text()
    assert bundled.count_rows(a) == 100
    with pytest.raises(bundled.DataError, match="only 15002"):
        bundled.write_sample(copy, tmp_path / "c", 20_000)


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("not the bundled data\n")
    assert bundled.main(["materialize", "--out", str(tmp_path)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
