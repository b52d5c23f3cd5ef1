#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: the CPU stack (scripts/setup.sh), then the [gpu]
# extra of pyproject.toml (TensorRT, onnxruntime-gpu) in place of the CPU onnxruntime wheel.
#
#   bash scripts/setup_gpu.sh                  # TensorRT 11 (the newest the [gpu] extra allows)
#   bash scripts/setup_gpu.sh --tensorrt 10    # TensorRT 10 (10.13.2 or newer 10.x)
#   bash scripts/setup_gpu.sh --dry-run ...    # print the commands, run nothing
#
# optim builds with TensorRT 10 and 11. They differ for FP16/BF16 from an FP32 model: 10 has the
# FP16/BF16 builder flags (weakly typed), 11 removed them (every network is strongly typed), so
# there `--precision fp16|bf16` / build.fp16_bf16: builder_flags is refused; the default
# strongly typed AutoCast engines build the same way on both.
# onnxruntime and onnxruntime-gpu install into the same folder: never have both (uninstalling
# one breaks the other), so the CPU wheel goes first. Re-running scripts/setup.sh afterwards
# brings the CPU wheel back: run this script again after it. Needs network access to NVIDIA's
# package index (the tensorrt-cu13-libs wheel fetches the libraries from there at install time).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash scripts/setup_gpu.sh [--tensorrt 10|11] [--dry-run]"
major="" given=0 dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tensorrt) given=1; major="${2:-}"; [ $# -ge 2 ] && shift 2 || shift ;;
    --tensorrt=*) given=1; major="${1#*=}"; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "error: unknown argument '$1' ($usage)" >&2; exit 2 ;;
  esac
done
if [ "$given" = 1 ] && [ "$major" != 10 ] && [ "$major" != 11 ]; then
  echo "error: --tensorrt takes 10 or 11 (the TensorRT majors optim supports), got '$major'" >&2
  exit 2
fi
run() { if [ "$dry" = 1 ]; then echo "+ $*"; else "$@"; fi; }

run bash scripts/setup.sh
PY=.venv/bin/python
READ_PY=$PY
[ -x "$READ_PY" ] || READ_PY=${PYTHON:-python3}   # --dry-run before any set-up
# The [gpu] extra, with the TensorRT requirement narrowed to one major when asked (e.g. ",==10.*").
mapfile -t reqs < <("$READ_PY" - "$major" <<'PYEOF'
import sys, tomllib
major = sys.argv[1]
for req in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]:
    print(req + f",=={major}.*" if major and req.startswith("tensorrt") else req)
PYEOF
)
echo "optim: installing ${reqs[*]} (TensorRT ${major:-10 or 11: the newest pip finds})"
run "$PY" -m pip uninstall -y -q onnxruntime onnxruntime-gpu
run "$PY" -m pip install -q --disable-pip-version-check "${reqs[@]}"
run .venv/bin/optim doctor
