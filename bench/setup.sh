#!/usr/bin/env bash
# Bench-only tools, installed into the project's virtualenv (never by scripts/bootstrap.sh):
#   py-spy  sampling profiler behind `python -m bench.overhead --profile`
# Idempotent: does nothing when the tool is already there. PYTHON names the venv's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BIN_DIR=$(dirname "$PYTHON")

if [ ! -x "$BIN_DIR/py-spy" ]; then
  echo "bench/setup.sh: installing py-spy into $BIN_DIR" >&2
  "$PYTHON" -m pip install -q -e ".[bench]"  # the project's `bench` extra
fi
