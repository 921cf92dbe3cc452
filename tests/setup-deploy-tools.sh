#!/usr/bin/env bash
# Prepare the virtualenv holding the tools that check deploy/: checkov,
# kubernetes-validate, hadolint and a PromQL parser (tests/deploy-tools.txt).
#
# Why a separate venv: checkov pulls ~100 packages with their own pins; keeping them out
# of the test venv keeps its pyarrow/duckdb/moto set unchanged. The venv is made and kept
# up to date by tests/setup-python.sh (same idempotence, same python3-venv bootstrap),
# pointed at another location and requirements file. tests/python/test_deploy.py runs
# this script itself, so `pytest tests/python` needs nothing else.
#
#   TOOLS=$(tests/setup-deploy-tools.sh | tail -1); "$TOOLS/checkov" --version
#
# Environment:
#   FEEDER_DEPLOY_VENV  venv location (default: $HOME/.cache/feeder/deploy-venv)
#   FEEDER_PYTHON3      interpreter that creates the venv (default: python3)
#
# Progress goes to stderr; stdout carries only the venv's bin directory, on the last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${FEEDER_DEPLOY_VENV:-${HOME:?HOME is not set}/.cache/feeder/deploy-venv}"

py="$(FEEDER_VENV="$venv" FEEDER_REQUIREMENTS="$here/deploy-tools.txt" \
    "$here/setup-python.sh" | tail -n 1)"
bin="$(dirname "$py")"
for tool in checkov kubernetes-validate hadolint; do
    [[ -x "$bin/$tool" ]] || {
        printf 'setup-deploy-tools: error: %s missing from %s\n' "$tool" "$bin" >&2
        exit 1
    }
done
printf '%s\n' "$bin"
