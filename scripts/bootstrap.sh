#!/usr/bin/env bash
# Creates .venv from requirements.lock with a Python 3.10 it finds by itself.
# A no-op when .venv already matches the lock, so every make target can call it.
#
#   bash scripts/bootstrap.sh          # create or update .venv
#   bash scripts/bootstrap.sh --lock   # regenerate requirements.lock from requirements.txt
#
# Environment: PYTHON=/path/to/python3.10 skips the search; VENV=dir moves the environment.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
UV_VERSION=0.13.9           # keep in step with requirements.txt
MIN_FREE_GIB=${MIN_FREE_GIB:-8}  # measured: 3.1 GiB environment + 3.2 GiB uv cache, plus headroom
LOCK=requirements.lock

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

is_py310() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }

find_python() {
  local candidate
  if [ -n "${PYTHON:-}" ]; then
    is_py310 "$PYTHON" || die "PYTHON=$PYTHON is not a working Python 3.10 interpreter."
    echo "$PYTHON"; return
  fi
  # 1. python3.10 on PATH (a pyenv shim answers only when 3.10 is selected, hence the real check).
  candidate=$(command -v python3.10 || true)
  if is_py310 "$candidate"; then echo "$candidate"; return; fi
  # 2. pyenv's installed 3.10.x, newest first.
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in $(ls -d "$(pyenv root)"/versions/3.10.* 2>/dev/null | sort -Vr); do
      if is_py310 "$candidate/bin/python3.10"; then echo "$candidate/bin/python3.10"; return; fi
    done
  fi
  # 3. a 3.10 that uv manages.
  if command -v uv >/dev/null 2>&1; then
    candidate=$(uv python find 3.10 2>/dev/null || true)
    if is_py310 "$candidate"; then echo "$candidate"; return; fi
  fi
  die "no Python 3.10 found (looked for python3.10 on PATH, pyenv's versions/3.10.*, 'uv python find 3.10').
  TFX 1.16 supports Python 3.8-3.10 only, and TFX 1.21 (which supports 3.11+) needs glibc >= 2.38.
  Install one of:
    pyenv install 3.10.13                     (then re-run; no need to select it)
    uv python install 3.10                    (then re-run)
    apt-get install python3.10 python3.10-venv (distributions that ship it)
  or point to one: PYTHON=/path/to/python3.10 make test"
}

check_disk() {
  local dir=$1 free_kib
  mkdir -p "$dir"
  free_kib=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  if [ "$free_kib" -lt $((MIN_FREE_GIB * 1024 * 1024)) ]; then
    die "only $((free_kib / 1024 / 1024)) GiB free under $dir; the environment needs about ${MIN_FREE_GIB} GiB
  (TensorFlow, TFX, Beam: ~3.1 GiB installed plus ~3.2 GiB of download cache).
  Free some space, or set UV_CACHE_DIR / VENV to a larger disk."
  fi
}

# The bytecode: Python compiles every module it imports from source unless a .pyc is there,
# and with PYTHONDONTWRITEBYTECODE (set on many CI machines) it never writes one, so each
# process (every pipeline component, Beam worker and offline Vertex task) spent ~25 s of CPU
# compiling TensorFlow, TFX and Beam again. uv compiles them once, at install time.
BYTECODE="compile-bytecode-1"

lock_digest() { { sha256sum "$LOCK" pyproject.toml; echo "$BYTECODE"; } | sha256sum | cut -d' ' -f1; }

ensure_uv() {
  if [ ! -x "$VENV/bin/uv" ]; then
    say "installing uv $UV_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
}

create_env() {
  local python stamp="$VENV/.lock-digest" start=$SECONDS
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(lock_digest)" ] && [ -x "$VENV/bin/python" ]; then
    return 0
  fi
  python=$(find_python)
  say "using $python ($("$python" --version 2>&1))"
  if [ -x "$VENV/bin/python" ] && ! is_py310 "$VENV/bin/python"; then
    die "$VENV exists but is not Python 3.10; remove it (rm -rf $VENV) and re-run."
  fi
  check_disk "$VENV"
  check_disk "${UV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/uv}"
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$python" -m venv "$VENV"; }
  ensure_uv
  say "installing $LOCK into $VENV and compiling its bytecode (about 1.5 min with a warm cache, a few minutes cold)"
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" --require-hashes --compile-bytecode \
    -r "$LOCK" \
    || die "installing $LOCK failed (see above). Network to PyPI is required on first set-up."
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" --no-deps --no-build-isolation -e . >/dev/null \
    || die "installing this project in editable mode failed (see above)."
  lock_digest > "$stamp"
  say "environment ready in $((SECONDS - start)) s: $VENV"
}

regenerate_lock() {
  create_env
  say "resolving requirements.txt for Python 3.10 on Linux"
  "$VENV/bin/uv" pip compile requirements.txt --python-version 3.10 --python-platform linux \
    --generate-hashes --custom-compile-command "make lock" -o "$LOCK"
  say "wrote $LOCK; run 'make test' to install and check it"
}

case "${1:-}" in
  --lock) regenerate_lock ;;
  "") create_env ;;
  *) die "unknown argument '$1' (use --lock or nothing)" ;;
esac
