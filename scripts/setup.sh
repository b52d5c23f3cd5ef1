#!/usr/bin/env bash
# Create .venv at the repo root and install optim with its pinned dependencies.
# Safe to re-run: an existing .venv is reused and only what is missing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: optim needs Python 3.11 (torch 2.14.1 wheels); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
bash scripts/build_plugins.sh   # csrc/ -> build/plugins/ (CPU op always; CUDA kernel where nvcc is)
.venv/bin/optim --help > /dev/null
echo "optim is installed in .venv (run: .venv/bin/optim --help)"
