"""The v2 CUDA preprocessing kernels checked without a GPU.

tests/preprocess_kernel_host.cpp compiles the kernels' own code (csrc/preprocess/preprocess_rows.h,
host+device functions) with g++ and runs every block and thread of each launch on the CPU, for
many shapes (realistic 1080p -> 640, odd sizes, widths that are no multiple of 4 or 8, c=1 and 3,
BGR, upscale, downscale, no resize, float16/float32, uint8/float frames, unaligned frames and
outputs), both kernels (direct and tiled): each output byte written exactly once, nothing written
outside, the CPU library's bits. Built with the address and undefined-behaviour sanitizers where
g++ has them, so a read past the frames or the shared-memory buffer fails the run.

Also: the CUDA library's host-only entry points (which kernel a call runs, refusals), which load
and answer without a GPU.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from tests.helpers import REPO
from tests.helpers.csrc import CUDA_LIB, Params, build_if_missing

HARNESS = REPO / "tests" / "preprocess_kernel_host.cpp"
SOURCES = [str(HARNESS), str(REPO / "csrc" / "preprocess" / "preprocess_cpu.cpp")]
FLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
         f"-I{REPO / 'csrc' / 'preprocess'}"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the kernel's host harness cannot be built (apt-get install g++)")
    exe = tmp_path_factory.mktemp("harness") / "preprocess_kernel_host"
    built = subprocess.run([gxx, *FLAGS, *SANITIZE, *SOURCES, "-o", str(exe)], capture_output=True, text=True)
    if built.returncode != 0 and "sanitize" in built.stderr:  # no libasan/libubsan: check without them
        built = subprocess.run([gxx, *FLAGS, *SOURCES, "-o", str(exe)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    return exe


@pytest.mark.slow  # compiles the harness with sanitizers
def test_every_block_and_thread_gives_the_cpu_library_bits(harness):
    done = subprocess.run([str(harness)], capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, (out[-4000:], done.stderr[-4000:])
    passed, failed = (int(v) for v in re.search(r"^(\d+) passed, (\d+) failed$", out, re.M).groups())
    assert failed == 0 and passed >= 200, out[-2000:]
    for name in ("1080p-640-f32", "1080p-640-f16", "tail-21x27-16x13-f16", "copy-float-specials-f32",
                 "src-unaligned-float-f16", "dst-unaligned-f32", "up-13x17-40x61-f16"):
        for kernel in ("direct", "tiled"):
            assert re.search(rf"^ok +{re.escape(name)} +{kernel} ", out, re.M), f"{name} {kernel} did not run"
    # the huge downscale runs direct only (its rows do not fit in shared memory)
    assert re.search(r"^ok +huge-downscale-6x40000-f32 +direct ", out, re.M)
    assert "FAIL" not in out


@pytest.mark.slow  # compiles the harness with sanitizers
def test_the_harness_fails_on_a_wrong_index(harness, tmp_path):
    """The harness is not blind: the kernels' header with one thread's pixels shifted by one fails."""
    header = (REPO / "csrc" / "preprocess" / "preprocess_rows.h").read_text()
    wrong = "const int32_t first = b.ox0 + tid * PX + 1;"
    assert "const int32_t first = b.ox0 + tid * PX;" in header
    inc = tmp_path / "inc"
    inc.mkdir()
    for f in (REPO / "csrc" / "preprocess").glob("*.h"):
        (inc / f.name).write_text(f.read_text())
    (inc / "preprocess_rows.h").write_text(header.replace("const int32_t first = b.ox0 + tid * PX;", wrong))
    exe = tmp_path / "broken"
    flags = [f for f in FLAGS if not f.startswith("-I")] + [f"-I{inc}"]
    built = subprocess.run([shutil.which("g++"), *flags, *SOURCES, "-o", str(exe)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    done = subprocess.run([str(exe), "odd-37x53"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "FAIL odd-37x53" in done.stdout


def _params(n, h, w, c, oh, ow, fp16=0):
    return Params(n, h, w, c, oh, ow, 1.0, (ctypes.c_float * 3)(0, 0, 0), (ctypes.c_float * 3)(1, 1, 1), 0, fp16)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: the CUDA library is not built here")
def test_cuda_library_says_which_kernel_runs_without_a_gpu():
    build_if_missing(CUDA_LIB)
    lib = ctypes.CDLL(str(CUDA_LIB))
    lib.optim_preprocess_version.restype = ctypes.c_char_p
    assert lib.optim_preprocess_version() == b"1.1.0"
    kernel_for = lib.optim_preprocess_cuda_kernel_for
    kernel_for.argtypes = [ctypes.POINTER(Params), ctypes.c_int32]
    tiled, direct, v1 = 3, 2, 1  # OPTIM_PP_KERNEL_* of preprocess_api.h
    assert kernel_for(_params(16, 1080, 1920, 3, 640, 640), 0) == tiled
    assert kernel_for(_params(16, 1080, 1920, 3, 640, 640, 1), 1) == tiled
    assert kernel_for(_params(1, 6, 40000, 1, 3, 8), 0) == direct
    assert kernel_for(_params(70000, 1, 1, 1, 40000, 1), 0) == v1
    assert kernel_for(_params(1, 4, 4, 2, 4, 4), 0) == -3  # OPTIM_PP_ERR_CHANNELS
    assert kernel_for(None, 0) == -1
    # Refusals come before any CUDA call, so they answer here too.
    run = lib.optim_preprocess_cuda_kernel
    run.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                    ctypes.c_int32]
    p = _params(1, 6, 40000, 1, 3, 8)
    assert run(p, 16, 0, 16, None, tiled) == -5  # OPTIM_PP_ERR_KERNEL: the rows do not fit
    assert run(p, 16, 0, 16, None, 7) == -5
    assert run(p, None, 0, 16, None, 0) == -1
    base = lib.optim_preprocess_cuda_baseline
    base.argtypes = [ctypes.c_void_p] * 4
    assert base(None, None, None, None) == -1
    peak = lib.optim_preprocess_cuda_peak_gbps
    peak.argtypes = [ctypes.c_int32, ctypes.POINTER(ctypes.c_double)]
    assert peak(0, None) == -1
    gbps = ctypes.c_double(-1)
    rc = peak(-1, ctypes.byref(gbps))
    assert (rc == 0 and gbps.value > 0) or (rc > 0 and gbps.value == 0)  # no GPU: a cudaError_t


@pytest.mark.slow  # nvcc compiles the kernels
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: the CUDA kernels cannot be compiled here")
def test_v2_kernels_move_16_bytes_an_instruction_and_do_not_spill(tmp_path):
    """Per v2 kernel (sm_90): 16-byte global stores; the tiled ones 16-byte read-only loads and
    shared stores; no spills and at most 72 registers (ptxas -v)."""
    src = REPO / "csrc" / "preprocess" / "preprocess_kernel.cu"
    common = ["nvcc", "-std=c++17", "-O3", "-arch=sm_90", f"-I{src.parent}", str(src)]
    ptx = subprocess.run([*common, "-ptx", "-o", str(tmp_path / "k.ptx")], capture_output=True, text=True)
    assert ptx.returncode == 0, ptx.stderr[-2000:]
    entries = re.split(r"^\.(?:visible )?\.?entry ", (tmp_path / "k.ptx").read_text(), flags=re.M)[1:]
    v2 = {e.split("(")[0]: e for e in entries if re.search(r"pp_(tiled|direct)_kernel", e.split("(")[0])}
    assert len(v2) == 16, list(v2)  # {tiled, direct} x {C 1, 3} x {uint8, float} x {float32, float16}
    for name, body in v2.items():
        assert re.search(r"st\.global\.v4\.(u32|f32|b32)", body), f"{name}: no 16-byte store"
        if "pp_tiled_kernel" in name:
            assert "ld.global.nc.v4.u32" in body and "st.shared.v4.u32" in body, f"{name}: no 16-byte staging"
    cubin = subprocess.run([*common, "-cubin", "-Xptxas=-v", "-o", str(tmp_path / "k.cubin")], capture_output=True,
                           text=True)
    assert cubin.returncode == 0, cubin.stderr[-2000:]
    seen = 0
    for block in cubin.stderr.split("Compiling entry function")[1:]:
        if not re.search(r"pp_(tiled|direct)_kernel", block.split("\n")[0]):
            continue
        seen += 1
        spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", block)
        regs = re.search(r"Used (\d+) registers", block)
        assert spill and spill.groups() == ("0", "0"), block
        assert regs and int(regs.group(1)) <= 72, block
    assert seen == 16
