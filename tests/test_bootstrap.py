"""scripts/bootstrap.sh refuses bad set-up input with a message that says what to do."""

import os
import shutil
import subprocess

import pytest

from settings.layout import PROJECT_ROOT

ROOT = PROJECT_ROOT
SCRIPT = ROOT / "scripts" / "bootstrap.sh"


def run(tmp_path, env_overrides, *args):
    """The script in a bare environment: only coreutils on PATH, a fresh VENV under tmp."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "dirname", "df", "awk", "mkdir", "sort", "ls", "cat", "sha256sum",
                 "cut"):
        target = shutil.which(tool)
        if target and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(target)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "VENV": str(tmp_path / "venv")}
    env.update(env_overrides)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def test_no_python_310_says_what_to_install(tmp_path):
    result = run(tmp_path, {})
    assert result.returncode == 1
    assert "no Python 3.10 found" in result.stderr
    assert "pyenv install 3.10" in result.stderr and "uv python install 3.10" in result.stderr
    assert "glibc" in result.stderr  # why not simply a newer TFX


def test_a_python_that_is_not_310_is_refused(tmp_path):
    other = shutil.which("python3")
    result = run(tmp_path, {"PYTHON": other})
    assert result.returncode == 1
    assert f"PYTHON={other} is not a working Python 3.10" in result.stderr


@pytest.mark.skipif(not os.path.exists(ROOT / ".venv" / "bin" / "python"),
                    reason="needs the project's Python 3.10 environment")
def test_not_enough_disk_is_reported_before_anything_is_installed(tmp_path):
    python = os.path.realpath(ROOT / ".venv" / "bin" / "python")
    result = run(tmp_path, {"PYTHON": python, "MIN_FREE_GIB": "100000"})
    assert result.returncode == 1
    assert "GiB free under" in result.stderr and "needs about 100000 GiB" in result.stderr
    assert not (tmp_path / "venv" / "bin").exists()


def test_unknown_argument(tmp_path):
    result = run(tmp_path, {}, "--frobnicate")
    assert result.returncode == 1 and "unknown argument '--frobnicate'" in result.stderr
