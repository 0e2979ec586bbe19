"""Humans in the loop, through the real commands and the real local pipeline: a contamination
mark takes exactly its rows out of the next run, and under --require-approval nothing is
pushed until a person approves that model by its fingerprint."""

import csv
import glob
import json
from pathlib import Path

import pytest
import tensorflow as tf

import local_runner
from control import marks, records
from data import bundled
from pipeline import configs
from pipeline.components.pusher import model_digest
from reporting import runs
from serving import versions
from tools import approval
from tools import marks as marks_command

ROWS = 3000
START, END = "2014-03-01", "2014-09-01"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("humans")
    bundled.write_sample(bundled.materialize(), work / "data", ROWS, seed=7)
    args = ["--data-root", str(work / "data"), "--output-root", str(work / "out"),
            "--train-steps", "60", "--min-auc", "0.5", "--no-safe-to-serve",
            "--require-approval", "--log-level", "WARNING"]
    config = configs.load(env={}, data_root=str(work / "data"), output_root=str(work / "out"))
    return work, args, config


def _expected_marked(data: Path) -> int:
    start, end = marks.parse_time(START), marks.parse_time(END)
    with open(data / "data.csv", newline="") as f:
        return sum(1 for r in csv.DictReader(f)
                   if start <= int(r["trip_start_timestamp"]) < end
                   and r["payment_type"] == "Cash")


def _rows_in(uri: str) -> list[tf.train.Example]:
    files = glob.glob(f"{uri}/Split-*/*")
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_a_mark_takes_its_rows_out_and_the_model_waits_for_an_approval_of_itself(
        setup, capsys):
    work, args, config = setup
    control = config.control_dir
    assert marks_command.main(["--control-dir", control, "add", "--from", START, "--to", END,
                               "--where", "payment_type=Cash", "--reason",
                               "the card reader was down: every trip looked like cash",
                               "--by", "ops-anna"]) == 0
    (mark,) = marks.active(control)

    assert local_runner.main(args) == 0
    first = runs.summarize(config.metadata_path, config.pipeline_name)
    expected = _expected_marked(work / "data")
    assert expected > 20
    assert first.contamination["rows"] == expected
    assert first.contamination["excluded"] == {mark.id: expected}
    window = first.artifacts["SpanWindow"]["Examples"]
    inside = [e for e in _rows_in(window) if marks.parse_time(START) <= e.features.feature[
        "trip_start_timestamp"].int64_list.value[0] < marks.parse_time(END)
        and e.features.feature["payment_type"].bytes_list.value[0] == b"Cash"]
    assert inside == []
    history = json.loads(Path(first.artifacts["Trainer"]["ModelRun"], "history.json")
                         .read_text())
    assert mark.id in history["contamination_marks"]  # the model records what it lacks
    # Blessed, and waiting: nothing pushed, the fingerprint and the command named.
    assert first.blessed and first.pushed is False
    fingerprint = first.approval["awaiting_approval"]
    # The approval binds to the model that would be pushed: the refit, not the evaluated.
    refit = Path(first.artifacts["RefitCheck"]["Model"], "Format-Serving")
    assert fingerprint == model_digest(str(refit)) != model_digest(
        str(Path(first.artifacts["Trainer"]["Model"], "Format-Serving")))
    refit_history = json.loads(Path(first.artifacts["Refit"]["ModelRun"], "history.json")
                               .read_text())
    assert mark.id in refit_history["contamination_marks"]
    assert versions.pushed_versions(config.serving_dir) == []
    out = capsys.readouterr().out
    assert "WAITING FOR APPROVAL" in out and f"approve {fingerprint[:16]}" in out

    # An approval of another model does not push this one.
    other = "0" * 64
    assert approval.main(["--control-dir", control, "--metadata-path", config.metadata_path,
                          "approve", other, "--reason", "wrong one"]) == 0
    assert local_runner.main(args) == 0
    assert versions.pushed_versions(config.serving_dir) == []
    assert runs.summarize(config.metadata_path, config.pipeline_name).approval[
        "awaiting_approval"] == fingerprint

    assert approval.main(["--control-dir", control, "--metadata-path", config.metadata_path,
                          "approve", fingerprint[:16], "--reason", "AUC by quarter checked",
                          "--by", "lead-ben"]) == 0
    assert local_runner.main(args) == 0
    pushed = runs.summarize(config.metadata_path, config.pipeline_name)
    assert pushed.pushed and len(versions.pushed_versions(config.serving_dir)) == 1
    assert pushed.approval["approved_by"].startswith("lead-ben")
    states = {c.node_id: c.state for c in pushed.components}
    assert states["Trainer"] == "cached" and states["Pusher"] == "ran"

    assert marks_command.main(["--control-dir", control, "remove", mark.id, "--reason",
                               "the reader logs show the cash was real"]) == 0
    assert marks.active(control) == []
    log = records.read(control)
    assert [r.action for r in log] == ["mark", "approve", "approve", "unmark"]
    assert [r.who for r in log][:1] == ["ops-anna"]


def test_bad_marks_and_approvals_are_refused_with_what_to_write(setup, capsys):
    _, _, config = setup
    control = config.control_dir
    assert marks_command.main(["--control-dir", control, "add", "--from", "2014-09-01",
                               "--to", "2014-03-01", "--reason", "x"]) == 2
    assert "ends" in capsys.readouterr().err
    assert marks_command.main(["--control-dir", control, "add", "--from", "yesterday",
                               "--to", "2014-03-01", "--reason", "x"]) == 2
    assert "not a date" in capsys.readouterr().err
    assert marks_command.main(["--control-dir", control, "remove", "nope",
                               "--reason", "x"]) == 2
    assert "no active mark" in capsys.readouterr().err
    assert approval.main(["--control-dir", control, "reject", "abc", "--reason", "x"]) == 2
    assert "not a model fingerprint" in capsys.readouterr().err
