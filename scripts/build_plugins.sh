#!/usr/bin/env bash
# Build the custom plugins in csrc/ (top-level CMakeLists.txt) into build/, Release:
# libraries land in build/plugins/. Prints what was built and what was skipped and why.
# Extra arguments go to the configure step, e.g. -DOPTIM_CUDA_ARCH=90a, -DTENSORRT_ROOT=/opt/tensorrt
# (TensorRT 10 or 11; or TENSORRT_ROOT in the environment), -DOPTIM_TENSORRT_INCLUDE_DIR=/path/to/include
# (headers only: the glue needs no TensorRT library to link) or -DOPTIM_WERROR=ON (warnings in
# optim's own sources are errors, as in CI: tests/test_plugin_glue.py).
# Called by scripts/setup.sh; safe to re-run (incremental). Exit 1 when a build step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake > /dev/null; then
  echo "optim: plugins not built: cmake not found (apt-get install cmake)"
  exit 0
fi
mkdir -p build
# A build folder configured from another checkout (copied or moved repo) cannot be reused.
if [ -f build/CMakeCache.txt ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$PWD" build/CMakeCache.txt; then
  rm -rf build/CMakeCache.txt build/CMakeFiles
fi
if ! cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" > build/configure.log 2>&1; then
  cat build/configure.log >&2
  echo "error: optim: configuring the plugins failed (log above, also in build/configure.log)" >&2
  exit 1
fi
grep -E '^-- optim: ' build/configure.log | sed 's/^-- //' || true
if ! cmake --build build -j2 > build/build.log 2>&1; then
  cat build/build.log >&2
  echo "error: optim: building the plugins failed (log above, also in build/build.log)" >&2
  exit 1
fi
for lib in build/plugins/*.so; do
  [ -e "$lib" ] && echo "optim: built $lib"
done
