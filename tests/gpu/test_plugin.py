"""On a GPU: the csrc/ preprocessing kernel and TensorRT plugin against the CPU op.

- the CUDA kernel (liboptim_preprocess_cuda.so) gives the CPU library's bits;
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


def _engine(tmp_path, model: onnx.ModelProto, name: str, sample_shape):
    from optim.stages.build import engine_from_onnx
    from optim.recipe import BatchRange, BuildSettings

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
