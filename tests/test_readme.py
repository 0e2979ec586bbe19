"""The README's shell blocks, as a newcomer runs them.

Every ```bash block either runs here as written, in README order, after the README's own
`make run` (outputs under a temporary OUTPUT_ROOT), or carries
`<!--pytest.mark.skip(reason="covered by PATH::TEST, ...")-->` naming the tests that run
what it shows: cloud commands, hours of work, placeholders such as DIR. pytest-codeblocks
reads the blocks and their markers. What the harness changes, and only that: a command that
starts the local server runs in the background on a free port (the README's `8501` becomes
that port) and the block goes on once the server answers; `curl` fails on an HTTP error
(`--fail-with-body`); every block has a time limit.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from pytest_codeblocks import extract_from_file

from models.local_cluster import free_ports
from settings.layout import PROJECT_ROOT
from settings.quiet import LIBRARY_LINE

README = Path(PROJECT_ROOT) / "README.md"
COVERED = re.compile(r'^pytest\.mark\.skip\(reason="covered by ([^"]+)"\)$')
TEST_ID = re.compile(r"([\w./-]+\.py)::(\w+)")
SHARED_RUN = "make run"
BLOCK_SECONDS = 900

# Functions the blocks see: curl fails on HTTP errors; `serving` waits for the server.
PRELUDE = r"""
set -euo pipefail
curl() { command curl --silent --show-error --fail-with-body "$@"; }
serving() {
  for _ in $(seq 1 600); do
    command curl -s -o /dev/null "localhost:$PORT/v1/models/" && return 0  # it answers: loaded
    kill -0 "$!" 2>/dev/null || { echo "the server exited" >&2; return 1; }
    sleep 0.2
  done
  echo "the server did not answer in 120 s" >&2; return 1
}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
"""
SERVER = re.compile(r"^(\.venv/bin/python -m serving\.server\b[^#\n]*?)\s*(#.*)?$", re.M)


def shell_blocks() -> list:
    return [b for b in extract_from_file(README) if b.syntax in ("bash", "sh")]


def covering_tests(block) -> list[tuple[str, str]] | None:
    """The tests a block's marker names; None for a block that runs here."""
    if not block.marks:
        return None
    (mark,) = block.marks
    found = COVERED.match(mark)
    assert found, f"README line {block.lineno}: {mark!r} is not skip(reason=\"covered by …\")"
    return TEST_ID.findall(found.group(1))


def as_run_here(code: str) -> str:
    """The block with the server started in the background on $PORT."""
    code = SERVER.sub(lambda m: f"{m.group(1)} --port $PORT & serving", code)
    return PRELUDE + code.replace("localhost:8501", "localhost:$PORT")


def run_block(code: str, env: dict[str, str], lineno: int) -> str:
    process = subprocess.Popen(["bash", "-c", as_run_here(code)], cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=BLOCK_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"README line {lineno}: still running after {BLOCK_SECONDS} s\n"
                             f"{output[-3000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):  # anything the block left running
            os.killpg(process.pid, signal.SIGTERM)
    assert process.returncode == 0, f"README line {lineno} failed:\n{code}\n{output[-4000:]}"
    noise = [line for line in output.splitlines() if LIBRARY_LINE.search(line)]
    assert not noise, f"README line {lineno} printed library log lines:\n" + "\n".join(noise)
    return output


def test_every_block_runs_here_or_names_the_tests_that_cover_it():
    blocks = shell_blocks()
    assert len(blocks) >= 20, "pytest-codeblocks found too few blocks: did the README move?"
    runs_here = [b for b in blocks if covering_tests(b) is None]
    assert len(runs_here) >= 5
    for block in blocks:
        tests = covering_tests(block)
        if tests is None:
            continue
        assert tests, f"README line {block.lineno}: the marker names no PATH::TEST"
        for path, name in tests:
            source = Path(PROJECT_ROOT, path)
            assert source.is_file(), f"README line {block.lineno}: no {path}"
            assert re.search(rf"^def {name}\(", source.read_text(), re.M), \
                f"README line {block.lineno}: {path} has no test {name}"
    first = blocks[0].code.splitlines()
    assert first[0].split("#")[0].strip() == SHARED_RUN, "the README starts with `make run`"


def test_the_readme_runs_as_written(tmp_path):
    """`make run` as the README's first command, then every block that runs here, in
    order, against that run's outputs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXI_")}
    env.update(TAXI_OUTPUT_ROOT=str(tmp_path / "outputs"), PORT=str(free_ports(1)[0]),
               HOME=str(tmp_path))
    first = shell_blocks()[0]
    output = run_block(SHARED_RUN, env, first.lineno)
    assert "\nBlessed: yes\n" in output, output[-2000:]
    assert list((tmp_path / "outputs" / "serving").glob("*/*/saved_model.pb"))
    ran = {}
    for block in shell_blocks():
        if covering_tests(block) is None:
            ran[block.code] = run_block(block.code, env, block.lineno)
    assert len(ran) >= 5, list(ran)
    said = "\n".join(ran.values())
    Path(os.environ.get("README_RUN_OUTPUT", os.devnull)).write_text(said)  # to read it
    assert re.search(r'\{"predictions": \[0\.\d+\]\}', said), said[-3000:]
    for what in ("active marks (2)", "resume after"):
        assert what in said, said[-3000:]


def test_every_link_inside_the_readme_reaches_a_heading():
    """`[…](#anchor)` links, slugged as GitHub slugs headings: lower case, punctuation out,
    spaces to hyphens."""
    text = README.read_text()
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    slugs = {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
             for heading in re.findall(r"^#{1,6} (.+)$", outside_code, re.M)}
    anchors = re.findall(r"\]\(#([^)]+)\)", outside_code)
    assert len(anchors) >= 8
    assert [a for a in anchors if a not in slugs] == []
