"""Where a command's noise goes: every library's log records, Python warnings, and what
C++ code (TensorFlow, Beam's workers) writes to stderr, into one log file; the terminal keeps
what the command itself says. `--verbose` or TAXI_LOG_LEVEL brings the logs back.

Why a file descriptor and not only `logging`: TensorFlow's CUDA registration errors and its
C++ warnings are written by C++ straight to fd 2, before and outside Python's logging.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

LEVEL_ENV = "TAXI_LOG_LEVEL"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# fd 2 as it was, and what C++ wrote meanwhile: see hold_native_stderr.
_held: tuple[int, Any, TextIO] | None = None


def hold_native_stderr() -> None:
    """For a command whose module imports TensorFlow at the top: what C++ writes to fd 2
    before the command knows where logs go (TensorFlow's CUDA registration errors, printed
    at import) is held in a temporary file, then given to `routed` (the log file, or the
    terminal with --verbose), or to the terminal if the command ends first. Python's own
    stderr (argparse's errors) still reaches the terminal at once."""
    global _held
    if _held is not None:
        return
    sys.stderr.flush()
    held = tempfile.TemporaryFile()  # noqa: SIM115  (released by release_native_stderr)
    saved = os.dup(2)
    os.dup2(held.fileno(), 2)
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(saved), "w", buffering=1, encoding="utf-8",  # noqa: SIM115
                      errors="backslashreplace")
    _held = (saved, held, python_stderr)
    atexit.register(release_native_stderr)


# A library's log line, as the tests look for it. A command's own timestamped lines (the
# server's) say `TIME LEVEL message`; a library's say `TIME LEVEL logger.name: message`
# (Python) or `TIME: L file.cc:N] message` (C++).
LIBRARY_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.,]\d+:? "
    r"(?:[IWEF] \S+\] |(?:INFO|WARNING|ERROR|DEBUG|CRITICAL) [\w.]+: )"
    r"|^(?:INFO|WARNING|ERROR|DEBUG|CRITICAL):[\w.]*:"  # logging's default format
    r"|^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ "  # absl/glog
    r"|\b\w*Warning: |^\s+warnings\.warn\("  # Python warnings
    r"|^Traceback \(most recent call last\)")

# What TensorFlow's C++ says on every import on a machine without a GPU: its log format
# (`2026-12-06 08:23:40.969730: E external/...] Unable to register cuFFT factory ...`) at
# info or warning level, and the error-level lines about CUDA plugins registered twice.
_STARTUP_NOISE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?:[IW] |E .*Unable to register "
    r"cu\w+ factory)|^To enable the following instructions: .*rebuild TensorFlow")


def release_native_stderr(to: TextIO | None = None, drop_noise: bool = True) -> None:
    """fd 2 back to where it was; what was held goes to `to` (the log file, or the terminal
    with --verbose). A command that ends before it routes its logs (--help, a bad flag)
    drops TensorFlow's start-up lines (`drop_noise`) and shows the rest on the terminal."""
    global _held
    if _held is None:
        return
    saved, held, python_stderr = _held
    _held = None
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    sys.stderr.close()
    sys.stderr = python_stderr
    held.seek(0)
    text = held.read().decode("utf-8", errors="backslashreplace")
    held.close()
    if to is None and drop_noise:
        text = "".join(line for line in text.splitlines(keepends=True)
                       if not _STARTUP_NOISE.match(line))
    if text:
        (to or sys.stderr).write(text)
        (to or sys.stderr).flush()


def file_stamp(when: datetime.datetime | None = None) -> str:
    """A UTC time for file names that every file system and file manager accepts
    (`20261124T120646Z`: no colons, sorts by time)."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    if when.tzinfo is None:  # a naive time is this machine's local time
        when = when.astimezone()
    return when.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def add_arguments(parser) -> None:
    """--verbose and --log-level, the same on every command."""
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show every library's logs on the terminal (as --log-level INFO); "
                             "they always go to the log file")
    parser.add_argument("--log-level", default=None,
                        help="log level shown on the terminal (DEBUG, INFO, WARNING; default: "
                             f"${LEVEL_ENV}, else only what the command itself says)")


def terminal_level(requested: str | None, verbose: bool = False) -> int | None:
    """The level at which logs reach the terminal; None keeps the terminal quiet. An
    explicit level wins over TAXI_LOG_LEVEL; --verbose means INFO."""
    name = requested or ("INFO" if verbose else os.environ.get(LEVEL_ENV, ""))
    if not name:
        return None
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {name!r}: use DEBUG, INFO, WARNING or ERROR")
    return level


@contextlib.contextmanager
def routed(log_path: Path, level: int | None, own: tuple[str, ...] = (),
           own_format: str = "%(message)s") -> Iterator[TextIO]:
    """Sends every log record (INFO and up), warning and stray print to `log_path`; with a
    `level`, records at that level also reach the terminal and nothing is redirected.
    The command's `own` loggers (by name prefix) still reach the terminal's stdout at INFO,
    in `own_format`. Yields the stream the command itself prints to (the terminal's
    stdout)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    release_native_stderr(log_file if level is None else None, drop_noise=False)
    out, err = sys.stdout, sys.stderr
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    file_handler = logging.StreamHandler(log_file)
    file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if level is not None:
        terminal = logging.StreamHandler(err)
        terminal.setLevel(level)
        terminal.setFormatter(logging.Formatter(FILE_FORMAT))
        handlers.append(terminal)
    elif own:
        mine = logging.StreamHandler(out)
        mine.setFormatter(logging.Formatter(own_format))
        mine.addFilter(lambda record: record.name.startswith(own))
        handlers.append(mine)
    for handler in saved[1]:  # e.g. a basicConfig's stderr handler: the file has it all
        if isinstance(handler, logging.StreamHandler) and handler.stream in (out, err):
            root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(min(logging.INFO, level or logging.INFO))
    logging.captureWarnings(True)
    saved_fd = None
    if level is None:
        sys.stdout.flush()
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(log_file.fileno(), 2)
        sys.stdout = sys.stderr = log_file
    try:
        yield out
    finally:
        if saved_fd is not None:
            log_file.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        sys.stdout, sys.stderr = out, err
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved[0])
        for handler in saved[1]:
            if handler not in root.handlers:
                root.addHandler(handler)
        log_file.close()


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, for the terminal (the traceback is in the log)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def command_log(output_root: str, command: str) -> Path:
    """Where a command other than the pipeline run keeps its logs."""
    return Path(output_root) / "logs" / f"{command}-{file_stamp()}.log"


def run_quietly(work: Callable[[], Any], args: Any, output_root: str, command: str,
                own: tuple[str, ...], own_format: str,
                expected: tuple[type[BaseException], ...] = ()
                ) -> tuple[Any, BaseException | None, Path]:
    """A command's work with the quiet default: (result, expected error or None, log file).
    An unknown --log-level is an expected error too."""
    log_file = command_log(output_root, command)
    try:
        level = terminal_level(args.log_level, args.verbose)
    except ValueError as e:
        return None, e, log_file
    with routed(log_file, level, own=own, own_format=own_format):
        try:
            return work(), None, log_file
        except expected as e:
            return None, e, log_file
