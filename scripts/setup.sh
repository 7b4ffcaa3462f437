#!/usr/bin/env bash
# Set up .venv: torch 2.13.0 (the CPU wheel on CPU machines), then bioimage-zoo (editable) with
# its test and dask extras. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  # Pinned on purpose: a bare `torch` requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test,dask]"    # dask: zoo predict --cluster, tested by the default suite
echo "bioimage-zoo is set up in .venv ($(.venv/bin/zoo --version))"
