"""The console's lines from the records a real run makes, and the log routing under it."""

from __future__ import annotations

import datetime
import io
import logging
import os
import subprocess
import sys
import time
import warnings

import pytest

from console.run_console import RunConsole
from models import PROGRESS_LOGGER
from settings import quiet
from settings.layout import PROJECT_ROOT

absl = logging.getLogger("absl")


def _component(name: str, cached: bool = False) -> None:
    absl.info("Component %s is running.", name)
    if cached:
        absl.info("A cached execution %d is used.", 7)
    absl.info("Component %s is finished.", name)


def test_one_plain_line_per_component_with_its_state(tmp_path):
    out = io.StringIO()
    with RunConsole(out, str(tmp_path / "none.sqlite"), "taxi", live=False) as console:
        _component("ExampleGen")
        _component("SchemaGen", cached=True)
        absl.info("Skipping component %s.", "Pusher")
        absl.info("Using deployment config: %s", "...")  # not a component event
    lines = out.getvalue().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ExampleGen", "ran"], ["SchemaGen", "cached"], ["Pusher", "skipped"]]
    assert [d[1] for d in console.done] == ["ran", "cached", "skipped"]


def test_a_component_that_quiets_absl_while_it_runs_still_gets_its_line(tmp_path):
    out = io.StringIO()
    with RunConsole(out, str(tmp_path / "none.sqlite"), "taxi", live=False):
        absl.info("Component %s is running.", "Transform")
        absl.setLevel(logging.WARNING)  # as a component's executor may do
        time.sleep(0.6)
        absl.info("Component %s is finished.", "Transform")
    assert out.getvalue().split()[:2] == ["Transform", "ran"]


def test_the_running_component_fails_with_one_line_and_training_progress_is_shown(tmp_path):
    out = io.StringIO()
    with pytest.raises(RuntimeError), \
            RunConsole(out, str(tmp_path / "none.sqlite"), "taxi", live=False) as console:
        absl.info("Component %s is running.", "Trainer")
        logging.getLogger(PROGRESS_LOGGER).info("step 40/100 loss 0.412 auc 0.901")
        assert "Trainer" in console._render().text.plain
        assert "step 40/100 loss 0.412" in console._render().text.plain
        raise RuntimeError("worker lost\nsecond line of detail")
    (line,) = out.getvalue().splitlines()
    assert line.split()[:2] == ["Trainer", "FAILED"]
    assert line.endswith("RuntimeError: worker lost")


def test_logs_warnings_and_cpp_stderr_go_to_the_log_file_not_the_terminal(tmp_path, capfd):
    log_path = tmp_path / "logs" / "run.log"
    with quiet.routed(log_path, level=None) as out:
        print("console line", file=out, flush=True)
        logging.getLogger("tensorflow").warning("tensorflow noise")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a deprecation", UserWarning, stacklevel=1)
        os.write(2, b"C++ factory registration error\n")
        print("a library's stray print")
        sys.stderr.write("a library's stray stderr\n")
    terminal = capfd.readouterr()
    assert terminal.out.strip() == "console line"
    assert terminal.err == ""
    text = log_path.read_text()
    for noise in ("tensorflow noise", "a deprecation", "C++ factory registration error",
                  "a library's stray print", "a library's stray stderr"):
        assert noise in text
    # After the run the terminal is the terminal again.
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_a_level_brings_the_logs_back_to_the_terminal_and_still_keeps_the_file(tmp_path, capfd):
    log_path = tmp_path / "run.log"
    with quiet.routed(log_path, level=logging.INFO):
        logging.getLogger("tensorflow").warning("tensorflow noise")
        os.write(2, b"C++ line\n")
    err = capfd.readouterr().err
    assert "tensorflow noise" in err and "C++ line" in err
    assert "tensorflow noise" in log_path.read_text()


def test_level_from_flag_verbose_or_environment(monkeypatch):
    monkeypatch.delenv(quiet.LEVEL_ENV, raising=False)
    assert quiet.terminal_level(None) is None
    assert quiet.terminal_level(None, verbose=True) == logging.INFO
    monkeypatch.setenv(quiet.LEVEL_ENV, "debug")
    assert quiet.terminal_level(None) == logging.DEBUG
    assert quiet.terminal_level("WARNING") == logging.WARNING
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        quiet.terminal_level("loud")


def test_file_stamps_are_utc_and_free_of_colons():
    when = datetime.datetime(2026, 11, 24, 12, 6, 46, 264901, tzinfo=datetime.timezone.utc)
    assert quiet.file_stamp(when) == "20261124T120646Z"
    local = datetime.datetime(2026, 11, 24, 12, 6, 46)  # naive: this machine's time
    assert quiet.file_stamp(local) == quiet.file_stamp(local.astimezone())
    assert ":" not in quiet.file_stamp()


HOLDING_COMMAND = """
import os, sys
from pathlib import Path
from settings import quiet
quiet.hold_native_stderr()
os.write(2, b"C++ line at import\\n")  # TensorFlow's CUDA registration errors, say
print("argparse-style error", file=sys.stderr, flush=True)
if sys.argv[1] == "routed":
    with quiet.routed(Path(sys.argv[2]), level=None) as out:
        print("the command's own line", file=out, flush=True)
"""


def _holding_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HOLDING_COMMAND, *args], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=60)


def test_cpp_lines_written_before_the_log_is_chosen_go_to_it(tmp_path):
    log_path = tmp_path / "command.log"
    proc = _holding_command("routed", str(log_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the command's own line\n"
    assert proc.stderr == "argparse-style error\n"  # Python's stderr is not held
    assert "C++ line at import" in log_path.read_text()


def test_cpp_lines_held_reach_the_terminal_if_the_command_ends_before_logging():
    proc = _holding_command("ends")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "argparse-style error\nC++ line at import\n"
