#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: the CPU stack (scripts/setup.sh), then the [gpu]
# extra of pyproject.toml (TensorRT, onnxruntime-gpu) in place of the CPU onnxruntime wheel.
# onnxruntime and onnxruntime-gpu install into the same folder: never have both (uninstalling
# one breaks the other), so the CPU wheel goes first. Re-running scripts/setup.sh afterwards
# brings the CPU wheel back: run this script again after it. Needs network access to NVIDIA's
# package index (the tensorrt-cu13-libs wheel fetches the libraries from there at install time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
GPU_REQS=$("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]))')
"$PY" -m pip uninstall -y -q onnxruntime onnxruntime-gpu
mapfile -t reqs <<< "$GPU_REQS"
"$PY" -m pip install -q --disable-pip-version-check "${reqs[@]}"
.venv/bin/optim doctor
