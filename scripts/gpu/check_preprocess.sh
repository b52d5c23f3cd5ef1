#!/usr/bin/env bash
# GPU check of the v2 preprocessing kernels (issue 23), run from the project root on a GPU machine
# (CUDA, nvcc, cmake, ncu, compute-sanitizer, python3 with torch; no TensorRT needed):
#   bash scripts/gpu/check_preprocess.sh 2>&1 | tee $OUT/log
# Python packages that machine lacks (pydantic, pydantic-core, annotated-types, typing-inspection,
# typing-extensions) go as cp312 wheels in .gpu/whl/ (git-ignored; see ../shared/gpu/README.md).
# Steps (each under `timeout`, time-stamped; a summary table at the end): GPU and versions; the
# cp312 wheels of .gpu/whl into /tmp/site; csrc/ built with CMake for sm_90 (ptxas -v: registers,
# spills); the GPU tests (tests/gpu: kernels bit-exact against the CPU library, TensorRT ones skip);
# bench-preprocess (v2 vs v1 side by side) at 1080x1920->640 batch 16 float32 and float16 and
# 480x640->224 batch 8; ncu of each kernel at 1080p->640 batch 16; compute-sanitizer memcheck and
# racecheck on the small kernel tests. Steps past the time budget are skipped, saying so.
# Files in $OUT (8 at most come back): log (the tee), build.log, tests.log, sanitizer.log,
# bench.json, ncu.txt, ncu.csv, ncu.ncu-rep. Without $OUT: /tmp/gpu_out.
export PYTHONUNBUFFERED=1 OPTIM_NO_PROGRESS=1
OUT=${OUT:-/tmp/gpu_out}
WORK=/tmp/gpu_work
BUDGET=${BUDGET:-400}  # seconds: steps that would start later are skipped
HARD=${HARD:-530}      # seconds: no step runs past this (its timeout is cut to fit)
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
SUMMARY=()
step() { echo; echo "=== $* ($(date +%T), +$(($(date +%s) - T0)) s)"; STEP_T=$(date +%s); }
done_step() {  # name rc result
  SUMMARY+=("$(printf '%-22s rc=%-4s %4ss  %s' "$1" "$2" "$(($(date +%s) - STEP_T))" "$3")")
}
cap() {  # seconds: $1, or less so that the step ends by HARD
  local left=$((HARD - ($(date +%s) - T0)))
  [ "$left" -lt 10 ] && left=10
  [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}
late() {  # name: true (and a summary line) when the budget is spent
  if [ $(($(date +%s) - T0)) -gt "$BUDGET" ]; then
    echo "skipped: past the ${BUDGET}s budget"; SUMMARY+=("$(printf '%-22s skipped (past the %ss budget)' "$1" "$BUDGET")")
    return 0
  fi
  return 1
}

step gpu
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
python3 -c "import sys,torch,numpy;print(sys.version.split()[0],'torch',torch.__version__,torch.version.cuda,'numpy',numpy.__version__)"
nvcc --version | tail -1; ncu --version | tail -1; compute-sanitizer --version | tail -1

step wheels
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
rc=$?; done_step wheels $rc "$(ls .gpu/whl | wc -l) wheels into /tmp/site"
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import pydantic, optim.cli.plugins; print('optim imports; pydantic', pydantic.VERSION)"

step build
rm -rf build
( timeout 240 cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DOPTIM_WERROR=ON "-DCMAKE_CUDA_FLAGS=-Xptxas=-v" &&
  timeout 240 cmake --build build -j16 ) > "$OUT/build.log" 2>&1
rc=$?
if [ "$rc" != 0 ]; then  # another host compiler may warn where this one did not: say so, build without -Werror
  echo "WERROR build failed (rc=$rc):"; grep -iE "error|warning" "$OUT/build.log" | head -20
  rm -rf build
  ( timeout 240 cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_FLAGS=-Xptxas=-v" &&
    timeout 240 cmake --build build -j16 ) >> "$OUT/build.log" 2>&1
  rc="werror-failed/$?"
fi
ls build/plugins
# ptxas -v: "Compiling entry function '<mangled>'" then the stack/spill line and "Used N registers"
python3 - "$OUT/build.log" <<'EOF'
import re, subprocess, sys
name = None
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Compiling entry function '(\S+)' for '(\w+)'", line)
    if m:
        name = subprocess.run(["c++filt", m.group(1)], capture_output=True, text=True).stdout.strip()
        name = re.sub(r"\(.*", "", name.replace("(anonymous namespace)::", "")); continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m: spill = m.groups(); continue
    m = re.search(r"Used (\d+) registers", line)
    if m and name:
        print(f"  {name:<52} regs {m.group(1):>3}  stack {spill[0]:>3}  spill {spill[1]}/{spill[2]}"); name = None
EOF
done_step build "$rc" "$(grep -c 'Used [0-9]* registers' "$OUT/build.log") kernels (ptxas -v above)"
[ -f build/plugins/liboptim_preprocess_cuda.so ] || { echo "no CUDA library: stopping"; tail -30 "$OUT/build.log"; exit 1; }

step gpu tests
if ! late "gpu tests"; then
  timeout "$(cap 240)" python3 -m pytest -p no:cacheprovider -q -rs tests/gpu > "$OUT/tests.log" 2>&1
  rc=$?
  grep -E "FAIL|Error|assert" "$OUT/tests.log" | head -20
  tail -8 "$OUT/tests.log"
  done_step "gpu tests" "$rc" "$(tail -1 "$OUT/tests.log")"
fi

bench() {  # name, then bench-preprocess arguments
  local name=$1; shift
  step "bench $name"
  late "bench $name" && return
  timeout "$(cap 120)" python3 -m optim bench-preprocess "$@" --json "$WORK/bench-$name.json" 2>&1 | tail -14
  local rc=${PIPESTATUS[0]}
  done_step "bench $name" "$rc" "$(python3 - "$WORK/bench-$name.json" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("no result:", e); sys.exit()
if r["gpu_kernel_ms"] is None:
    print(r["gpu_note"]); sys.exit()
t = {(x["kernel"], x["batch"]): x for x in r["gpu_timings"]}
parts = []
for k in ("tiled", "direct", "v1"):
    x = t.get((k, r["batch"]))
    if x:
        parts.append(f"{k} {x['ms_per_image']*1e3:.2f}us {x['gb_per_s']:.0f}GB/s"
                     + (f" {x['peak_fraction']:.0%}" if x["peak_fraction"] is not None else ""))
b1 = t.get((r["gpu_kernel"], 1))
print(f"b{r['batch']}: " + ", ".join(parts) + f"; {r['gpu_kernel']}/v1 {r['speedup_vs_baseline']}x"
      + (f"; b1 {r['gpu_kernel']} {b1['ms_per_image']*1e3:.2f}us" if b1 else ""))
EOF
)"
}
bench 1080p-f32 --frame 1080x1920 --size 640x640 --batch 16 --out-dtype float32 --iterations 15
bench 1080p-f16 --frame 1080x1920 --size 640x640 --batch 16 --out-dtype float16 --iterations 15
bench 480p-224-f32 --frame 480x640 --size 224x224 --batch 8 --out-dtype float32 --iterations 15
python3 - "$WORK" "$OUT/bench.json" <<'EOF'
import glob, json, os, sys
out = {os.path.basename(p)[6:-5]: json.load(open(p)) for p in sorted(glob.glob(sys.argv[1] + "/bench-*.json"))}
json.dump(out, open(sys.argv[2], "w"), indent=1)
EOF

step ncu
if ! late ncu; then
  rm -f "$OUT/ncu.ncu-rep"
  timeout "$(cap 200)" ncu --clock-control none --kernel-name 'regex:pp_tiled|pp_direct|preprocess_kernel' --launch-count 5 -f \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum,lts__t_sector_hit_rate.pct \
    -o "$OUT/ncu" python3 scripts/gpu/ncu_driver.py > "$WORK/ncu-run.log" 2>&1
  rc=$?
  tail -12 "$WORK/ncu-run.log"
  if [ -f "$OUT/ncu.ncu-rep" ]; then
    ncu --import "$OUT/ncu.ncu-rep" --page details --print-units base > "$OUT/ncu.txt" 2>&1
    ncu --import "$OUT/ncu.ncu-rep" --page details --print-units base --csv > "$OUT/ncu.csv" 2>&1
    python3 scripts/gpu/ncu_summary.py "$OUT/ncu.csv" | tee "$WORK/ncu-summary.txt"
  fi
  done_step ncu "$rc" "$(ls "$OUT"/ncu.* 2>/dev/null | wc -l) files; table above and at the end"
fi

sanitize() {  # tool, seconds, pytest -k expression
  step "compute-sanitizer $1"
  late "sanitizer $1" && return
  {
    echo "=== compute-sanitizer --tool $1 (-k '$3')"
    timeout "$(cap "$2")" compute-sanitizer --tool "$1" --error-exitcode 9 python3 -m pytest -p no:cacheprovider -q \
      tests/gpu/test_plugin.py -k "$3"
    echo "rc=$?"
  } >> "$OUT/sanitizer.log" 2>&1
  local rc
  rc=$(grep -o '^rc=[0-9]*' "$OUT/sanitizer.log" | tail -1 | cut -d= -f2)
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race reported|Hazard|passed|failed" "$OUT/sanitizer.log" | tail -6
  done_step "sanitizer $1" "$rc" "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1); $(grep -E '[0-9]+ (passed|failed)' "$OUT/sanitizer.log" | tail -1)"
}
: > "$OUT/sanitizer.log"
sanitize memcheck 150 "v2 and small and (float16 or edges)"
sanitize racecheck 120 "v2 and small and u8 and float32"

step summary
echo "device: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); $(($(date +%s) - T0)) s in all"
printf '%s\n' "${SUMMARY[@]}"
[ -f "$WORK/ncu-summary.txt" ] && { echo "ncu (1080x1920 -> 640x640, batch 16, clocks not locked):"; cat "$WORK/ncu-summary.txt"; }
ls -la "$OUT"
