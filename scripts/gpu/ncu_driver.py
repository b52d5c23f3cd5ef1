"""What ncu profiles: one launch of each preprocessing kernel, nothing else of ours.

    ncu --kernel-name regex:'pp_tiled|pp_direct|preprocess_kernel' python3 scripts/gpu/ncu_driver.py

Frames and outputs are allocated with torch (its own kernels are filtered out by the regex).
Each config is launched once: ncu replays it with caches flushed between passes, so every
profile starts cold (frames from DRAM). Prints the order of the launches, for the summary.
"""

from __future__ import annotations

import ctypes
import sys

import torch

sys.path.insert(0, ".")
from optim.ops.plugins import Params, find  # noqa: E402
from optim.ops.preprocess import PreprocessOp  # noqa: E402
from optim.ops.preprocess_cpu import make_params  # noqa: E402

KERNELS = {"tiled": 3, "direct": 2, "v1": 1}
CONFIGS = [("tiled", "float32"), ("direct", "float32"), ("v1", "float32"), ("tiled", "float16"),
           ("direct", "float16")]


def main() -> int:
    n, h, w, c, oh, ow = 16, 1080, 1920, 3, 640, 640
    lib = ctypes.CDLL(str(find("cuda")))
    lib.optim_preprocess_cuda_kernel.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_int32,
                                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
    src = torch.randint(0, 256, (n, h, w, c), dtype=torch.uint8, device="cuda")
    for i, (kernel, dtype) in enumerate(CONFIGS):
        op = PreprocessOp(out_h=oh, out_w=ow, out_dtype=dtype, channel_order="BGR",
                          mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        dst = torch.empty((n, c, oh, ow), dtype=torch.float16 if dtype == "float16" else torch.float32,
                          device="cuda")
        rc = lib.optim_preprocess_cuda_kernel(make_params((n, h, w, c), op), src.data_ptr(), 0, dst.data_ptr(),
                                              None, KERNELS[kernel])
        torch.cuda.synchronize()
        print(f"launch {i}: {kernel} {dtype} {n}x{h}x{w}x{c} -> {oh}x{ow} rc={rc}", flush=True)
        if rc != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
