#!/usr/bin/env bash
# Prepare the Python virtualenv used by Feeder's Python-side tests (tests/python/).
#
# Why a script: the interop client and the dataset checker must run the same pinned
# pyarrow/duckdb/grpcio on every developer machine and in CI, on machines that start
# fresh, without touching the system Python (Debian marks it externally managed).
#
#   FEEDER_PYTHON=$(tests/setup-python.sh | tail -1)
#   "$FEEDER_PYTHON" -m pytest tests/python
#
# Idempotent: the venv is created once and requirements are installed only when
# tests/python/requirements.txt (or the venv's Python) changed since the last
# successful install, which is recorded by a hash marker inside the venv.
#
# Environment:
#   FEEDER_VENV      venv location (default: $HOME/.cache/feeder/venv)
#   FEEDER_REQUIREMENTS  requirements file (default: tests/python/requirements.txt;
#                    tests/setup-deploy-tools.sh passes its own, for its own venv)
#   FEEDER_PYTHON3   interpreter that creates the venv (default: python3)
#
# Progress goes to stderr; stdout carries only the venv's python path, on the last line.
set -euo pipefail

log() { printf 'setup-python: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="${FEEDER_REQUIREMENTS:-$here/python/requirements.txt}"
venv="${FEEDER_VENV:-${HOME:?HOME is not set}/.cache/feeder/venv}"
base_python="${FEEDER_PYTHON3:-python3}"
marker="$venv/.feeder-requirements.sha256"

[[ -f "$req" ]] || die "missing $req"
command -v "$base_python" >/dev/null 2>&1 \
    || die "'$base_python' not found; install Python 3.11+ (Debian: apt-get install python3 python3-venv)"

mkdir -p "$(dirname "$venv")"

# Serialize concurrent runs (parallel test jobs) on the same venv.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
fi

venv_works() {
    [[ -x "$venv/bin/python" ]] \
        && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1 \
        && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}

ensure_venv_support() {
    # Debian splits ensurepip into python3-venv; without it `python3 -m venv` fails
    # half-way and leaves a venv without pip.
    if "$base_python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        local ver
        ver="$("$base_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        log "python3 lacks ensurepip; installing python3-venv (python$ver-venv) with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq python3-venv >&2 || true
        # python3-venv matches Debian's default python3; make sure the versioned one is
        # there too, for when python3 is not the distribution default.
        if ! "$base_python" -c 'import ensurepip' >/dev/null 2>&1; then
            apt-get install -y -qq "python$ver-venv" >&2 || true
        fi
    fi
    "$base_python" -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || die "'$base_python -m venv' cannot bootstrap pip (no ensurepip); install python3-venv"
}

if ! venv_works; then
    if [[ -e "$venv" ]]; then
        # Only ever delete something that is recognisably a (broken) virtualenv.
        [[ -f "$venv/pyvenv.cfg" ]] \
            || die "$venv exists and is not a virtualenv; remove it or set FEEDER_VENV"
        log "recreating broken virtualenv $venv"
        rm -rf "$venv"
    fi
    ensure_venv_support
    log "creating virtualenv $venv with $("$base_python" --version 2>&1)"
    "$base_python" -m venv "$venv" >&2
    venv_works || die "virtualenv $venv was created but has no working python/pip"
fi

py="$venv/bin/python"

# The marker covers the requirements and the interpreter (a new Python needs new wheels).
want="$(
    {
        cat "$req"
        "$py" -c 'import sys, platform; print(sys.version); print(platform.machine())'
    } | "$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
)"
have="$(cat "$marker" 2>/dev/null || true)"

if [[ "$want" != "$have" ]]; then
    log "installing $req into $venv"
    rm -f "$marker"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install --no-input -q -r "$req" >&2 \
        || die "pip install -r $req failed"
    printf '%s\n' "$want" >"$marker"
    log "requirements installed"
else
    log "requirements up to date in $venv"
fi

printf '%s\n' "$py"
