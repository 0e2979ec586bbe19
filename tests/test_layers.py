"""Imports run down the layers that pyproject.toml's [tool.importlinter] contracts name: the
real check on the real tree, and proof that it fails on an import up a layer."""

import shutil
import subprocess
import sys
from pathlib import Path

from settings.layout import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(root),
                                                       "PATH": "/usr/bin:/bin"})


def test_every_import_runs_down_the_layers():
    done = lint(PROJECT_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_an_import_up_a_layer_is_named_and_fails(tmp_path):
    for package in {p.parent for p in PROJECT_ROOT.glob("*/__init__.py")}:
        shutil.copytree(package, tmp_path / package.name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    reader = tmp_path / "data" / "readers.py"
    reader.write_text(reader.read_text() + "\n\ndef _up():\n    from reporting import runs\n")
    done = lint(tmp_path)
    assert done.returncode == 1
    assert "data is not allowed to import reporting" in done.stdout
    assert "data.readers -> reporting.runs" in done.stdout
