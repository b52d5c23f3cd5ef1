"""On a GPU: the csrc/ preprocessing kernel and TensorRT plugin against the CPU op.

- the CUDA kernel (liboptim_preprocess_cuda.so) gives the CPU library's bits: each kernel (v1,
  and v2's direct and tiled) on realistic and awkward shapes, unaligned pointers, float16 edges;
- an engine of just the OptimPreprocess node (the TensorRT plugin) gives the CPU op's values;
- an engine of a model with the fused op, fed raw frames, matches the engine of the plain
  model fed frames preprocessed on the host.
Skipped, with the reason, without a GPU, TensorRT, or the built libraries; the kernel tests
need only a GPU (and the CUDA library), not TensorRT. Every skip is decided before any fixture
that needs more (the exported tiny model needs onnxslim) runs.
"""

from __future__ import annotations

import ctypes

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from optim.ops.preprocess import PreprocessOp, make_node, prepend, reference
from optim.ops.plugins import Params, find
from tests.gpu._env import EXPORT_REASON, KERNEL_REASON, REASON

pytestmark = pytest.mark.gpu
OP = PreprocessOp(out_h=16, out_w=16, channel_order="BGR", mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225))


def _need(kind: str, trt: bool = True, reason: str | None = None) -> None:
    why = (reason or REASON) if trt else KERNEL_REASON
    if why:
        pytest.skip(why)
    if find(kind) is None:
        pytest.skip(f"{kind} plugin library not built (TENSORRT_ROOT=... bash scripts/build_plugins.sh)")


def _frames(n=3, h=21, w=27):
    return np.random.default_rng(5).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
@pytest.mark.parametrize("in_float", [False, True])
def test_cuda_kernel_gives_the_cpu_library_bits(out_dtype, in_float):
    _need("cuda", trt=False)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    from optim.ops.preprocess_cpu import make_params, run_cpu

    op = PreprocessOp(out_h=16, out_w=16, channel_order="BGR", out_dtype=out_dtype)
    frames = _frames()
    want = run_cpu(frames, op)
    lib = ctypes.CDLL(str(find("cuda")))
    fn = lib.optim_preprocess_cuda_f32 if in_float else lib.optim_preprocess_cuda
    fn.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    src = torch.from_numpy(frames.astype(np.float32) if in_float else frames).cuda()
    dst = torch.empty(want.shape, dtype=torch.float16 if out_dtype == "float16" else torch.float32, device="cuda")
    p = make_params(frames.shape, op)
    assert fn(p, src.data_ptr(), dst.data_ptr(), None) == 0
    torch.cuda.synchronize()
    got = dst.cpu().numpy()
    assert got.view(np.uint16 if out_dtype == "float16" else np.uint32).tobytes() == \
        want.view(np.uint16 if out_dtype == "float16" else np.uint32).tobytes()


# The v2 kernels (csrc/preprocess/preprocess_rows.h) on the device: every kernel the plan can
# run for the shape (auto, direct, tiled; v1 too for uint8 frames) against the CPU library, bit
# for bit, into poisoned (all-NaN) outputs. Ids with "small" are quick: the GPU check runs them
# under compute-sanitizer memcheck and racecheck.
KERNELS = {"auto": 0, "v1": 1, "direct": 2, "tiled": 3}  # OPTIM_PP_KERNEL_* of preprocess_api.h
SHAPES = {  # n, h, w, c, out_h, out_w, bgr
    "1080p-640": (2, 1080, 1920, 3, 640, 640, 1),
    "480p-224": (3, 480, 640, 3, 224, 224, 0),
    "odd-small": (2, 37, 53, 3, 19, 29, 1),
    "tail-small": (3, 21, 27, 3, 16, 13, 1),
    "gray-up-small": (2, 9, 6, 1, 14, 23, 0),
    "copy-small": (2, 33, 45, 3, 33, 45, 1),
    "up-small": (1, 13, 17, 3, 40, 61, 0),
    "wide-small": (1, 4, 2000, 3, 2, 1100, 1),
    "huge-downscale-small": (1, 6, 40000, 1, 3, 8, 0),
}


def _kernel_lib():
    _need("cuda", trt=False)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    lib = ctypes.CDLL(str(find("cuda")))
    lib.optim_preprocess_cuda_kernel.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_int32,
                                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
    lib.optim_preprocess_cuda_baseline.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_void_p,
                                                   ctypes.c_void_p]
    lib.optim_preprocess_cuda_kernel_for.argtypes = [ctypes.POINTER(Params), ctypes.c_int32]
    return lib, torch


def _check_kernels(frames: np.ndarray, op: PreprocessOp, shifts=((0, 0), (1, 1))) -> list[str]:
    """Every kernel that can run these sizes, at 16-byte aligned pointers and at (src, dst) shifted by
    the given elements; asserts the CPU library's bits; returns what ran."""
    lib, torch = _kernel_lib()
    from optim.ops.preprocess_cpu import make_params, run_cpu

    want = run_cpu(frames, op)
    bits = np.uint16 if op.out_dtype == "float16" else np.uint32
    want_bytes = want.view(bits).tobytes()
    in_float = frames.dtype == np.float32
    p = make_params(frames.shape, op)
    ran = []
    for src_shift, dst_shift in shifts:
        src_raw = torch.zeros(frames.nbytes + 64, dtype=torch.uint8, device="cuda")
        src_at = src_shift * frames.itemsize
        src_raw[src_at:src_at + frames.nbytes].copy_(torch.from_numpy(frames.view(np.uint8).reshape(-1)).cuda())
        for name, kernel in KERNELS.items():
            if name == "v1" and in_float:
                continue
            dst_raw = torch.full((want.nbytes + 64,), 0xFF, dtype=torch.uint8, device="cuda")  # NaN everywhere
            dst_at = dst_shift * want.itemsize
            rc = lib.optim_preprocess_cuda_kernel(p, src_raw.data_ptr() + src_at, int(in_float),
                                                  dst_raw.data_ptr() + dst_at, None, kernel)
            if rc == -5:  # OPTIM_PP_ERR_KERNEL: this kernel cannot run these sizes
                assert name == "tiled", f"{name} refused"
                continue
            assert rc == 0, f"{name}: rc {rc}"
            torch.cuda.synchronize()
            got = dst_raw.cpu().numpy()
            assert got[dst_at:dst_at + want.nbytes].tobytes() == want_bytes, \
                f"{name} (src +{src_shift}, dst +{dst_shift}): not the CPU library's bits"
            assert (got[:dst_at] == 0xFF).all() and (got[dst_at + want.nbytes:] == 0xFF).all(), \
                f"{name}: wrote outside its output"
            ran.append(f"{name}+{src_shift}/{dst_shift}")
        if not in_float:  # the exported v1 entry point
            dst_raw = torch.full((want.nbytes,), 0xFF, dtype=torch.uint8, device="cuda")
            assert lib.optim_preprocess_cuda_baseline(p, src_raw.data_ptr() + src_at, dst_raw.data_ptr(), None) == 0
            torch.cuda.synchronize()
            assert dst_raw.cpu().numpy().tobytes() == want_bytes
    return ran


@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
@pytest.mark.parametrize("in_float", [False, True], ids=["u8", "f32in"])
@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_v2_kernels_give_the_cpu_library_bits(shape, in_float, out_dtype):
    n, h, w, c, oh, ow, bgr = SHAPES[shape]
    frames = np.random.default_rng(list(SHAPES).index(shape)).integers(0, 256, (n, h, w, c), dtype=np.uint8)
    if in_float:
        frames = frames.astype(np.float32)
    op = PreprocessOp(out_h=oh, out_w=ow, channel_order="BGR" if bgr else "RGB", out_dtype=out_dtype,
                      mean=(0.485, 0.456, 0.406)[:c], std=(0.229, 0.224, 0.225)[:c])
    ran = _check_kernels(frames, op, shifts=((0, 0),) if n * h * w > 10**6 else ((0, 0), (1, 1), (3, 0)))
    assert any(r.startswith("auto") for r in ran) and any(r.startswith("direct") for r in ran), ran


def test_v2_kernels_float16_edges_small():
    """Subnormals (std 3e6), overflow to inf (std 1e-3), -0 (v == mean, std < 0): the hardware
    float16 conversion gives the CPU library's software bits."""
    frames = np.random.default_rng(3).integers(0, 256, (1, 6, 5, 3), dtype=np.uint8)
    frames[0, 0, 0, 2] = 128
    for oh, ow in ((6, 5), (4, 9)):
        op = PreprocessOp(out_h=oh, out_w=ow, scale=1.0, mean=(0.0, 0.0, 128.0), std=(3e6, 1e-3, -1.0),
                          out_dtype="float16")
        _check_kernels(frames, op)


def test_v2_auto_kernel_small():
    """The v2 plan (OPTIM_PP_KERNEL_AUTO): tiled for the issue's shapes (the rows fit in shared memory)."""
    lib, _ = _kernel_lib()
    from optim.ops.preprocess_cpu import make_params

    for out_dtype in ("float32", "float16"):
        op = PreprocessOp(out_h=640, out_w=640, out_dtype=out_dtype)
        assert lib.optim_preprocess_cuda_kernel_for(make_params((16, 1080, 1920, 3), op), 0) == KERNELS["tiled"]
        assert lib.optim_preprocess_cuda_kernel_for(make_params((16, 1080, 1920, 3), op), 1) == KERNELS["tiled"]


def _engine(tmp_path, model: onnx.ModelProto, name: str, sample_shape):
    from optim.stages.build import engine_from_onnx
    from optim.settings import BatchRange, BuildSettings

    src, plan = tmp_path / f"{name}.onnx", tmp_path / f"{name}.plan"
    onnx.save(model, str(src))
    plugins = (find("tensorrt"),) if any(n.op_type == "OptimPreprocess" for n in model.graph.node) else ()
    engine_from_onnx(src, plan, BuildSettings(plugins=plugins), "h100", batch=BatchRange(min=1, opt=3, max=8),
                     sample_shape=sample_shape)
    return plan


def test_tensorrt_plugin_matches_the_cpu_op(tmp_path):
    _need("tensorrt")
    from optim.backends import open_runner

    cast = helper.make_node("Cast", ["frames"], ["frames_f"], to=TensorProto.FLOAT)  # as prepend() does
    g = helper.make_graph([cast, make_node(OP, "frames_f", "out")], "pre",
                          [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["n", 21, 27, 3])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3, 16, 16])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)])
    plan = _engine(tmp_path, model, "pre", (21, 27, 3))
    frames = _frames()
    with open_runner(plan) as r:
        got = r.infer({"frames": frames})["out"]
    np.testing.assert_allclose(got, reference(frames, OP), rtol=0, atol=1e-6)


def test_engine_with_plugin_matches_host_preprocessing(tmp_path, request):
    _need("tensorrt", reason=EXPORT_REASON)
    tiny_onnx = request.getfixturevalue("tiny_onnx")  # only now: exporting it needs torch, onnxslim, ORT
    from optim.backends import open_runner

    plain = onnx.load(str(tiny_onnx))
    fused_plan = _engine(tmp_path, prepend(plain, OP, (21, 27)), "fused", (21, 27, 3))
    plain_plan = _engine(tmp_path, plain, "plain", (3, 16, 16))
    frames = _frames()
    with open_runner(fused_plan) as r:
        got = r.infer({"frames": frames})["logits"]
    with open_runner(plain_plan) as r:
        want = r.infer({"input": reference(frames, OP)})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
