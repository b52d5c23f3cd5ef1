"""The preprocessing op on CPU: the csrc/ library vs a NumPy reference, its settings, ``optim bench-preprocess``.
The op fused in front of a model (the fuse stage): tests/test_fuse.py."""

from __future__ import annotations

import numpy as np
import pytest

from optim.errors import DataError, InputError
from optim.ops.preprocess import PreprocessOp, reference
from tests.helpers.cli import assert_one_line_error, optim
from tests.helpers.plugins import IMAGENET, random_frames

pytestmark = pytest.mark.usefixtures("cpu_library_built")


def _close(got, want):
    if want.dtype == np.float16:  # within one float16 rounding step
        g, w = got.astype(np.float32), want.astype(np.float32)
        assert np.all(np.abs(g - w) <= np.spacing(np.abs(want)).astype(np.float32))
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("n,h,w,c,oh,ow,order,dtype", [
    (3, 7, 13, 3, 7, 13, "RGB", "float32"),   # no resize, odd sizes, batch > 1
    (2, 17, 11, 3, 5, 9, "BGR", "float32"),   # downsample, BGR frames
    (1, 5, 6, 3, 23, 31, "RGB", "float16"),   # upsample, float16 output
    (2, 9, 9, 3, 9, 9, "BGR", "float16"),     # no resize, float16, BGR
    (4, 9, 10, 1, 4, 5, "RGB", "float32"),    # grey frames
])
def test_cpu_library_matches_numpy_reference(n, h, w, c, oh, ow, order, dtype):
    from optim.ops.preprocess_cpu import run_cpu

    kw = IMAGENET if c == 3 else dict(mean=(0.286,), std=(0.353,))
    op = PreprocessOp(out_h=oh, out_w=ow, channel_order=order, out_dtype=dtype, **kw)
    frames = random_frames(n, h, w, c)
    got, want = run_cpu(frames, op), reference(frames, op)
    assert got.shape == want.shape == (n, c, oh, ow) and got.dtype == want.dtype
    _close(got, want)


def test_float_frames_give_the_same_result():
    """The float32 path (what the graph and the TensorRT plugin use) equals the uint8 path."""
    from optim.ops.preprocess_cpu import run_cpu

    op = PreprocessOp(out_h=6, out_w=11, channel_order="BGR", **IMAGENET)
    frames = random_frames(2, 13, 7, 3, seed=9)
    assert run_cpu(frames.astype(np.float32), op).tobytes() == run_cpu(frames, op).tobytes()


def test_reference_by_hand():
    f = np.array([[[[0, 10, 20], [30, 40, 50]], [[60, 70, 80], [90, 100, 110]]]], np.uint8)  # 1x2x2x3
    same = reference(f, PreprocessOp(out_h=2, out_w=2, scale=1.0))
    assert same[0, 0].tolist() == [[0, 30], [60, 90]] and same[0, 2, 1, 1] == 110
    bgr = reference(f, PreprocessOp(out_h=2, out_w=2, scale=1.0, channel_order="BGR"))
    assert bgr[0, 0, 0, 0] == 20 and bgr[0, 2, 0, 0] == 0
    one = reference(f, PreprocessOp(out_h=1, out_w=1, scale=0.5, mean=(1, 1, 1), std=(2, 2, 2)))
    assert one[0, :, 0, 0].tolist() == [(45 * 0.5 - 1) / 2, (55 * 0.5 - 1) / 2, (65 * 0.5 - 1) / 2]


def test_bad_input_and_settings():
    from optim.ops.preprocess_cpu import run_cpu

    with pytest.raises(DataError, match="uint8 or float32"):
        run_cpu(np.zeros((1, 4, 4, 3), np.float64), PreprocessOp(out_h=4, out_w=4))
    with pytest.raises(DataError, match="C 1 or 3"):
        run_cpu(np.zeros((1, 4, 4, 2), np.uint8), PreprocessOp(out_h=4, out_w=4))
    with pytest.raises(InputError, match="channel_order"):
        PreprocessOp(out_h=4, out_w=4, channel_order="GBR")
    with pytest.raises(InputError, match="std"):
        PreprocessOp(out_h=4, out_w=4, std=(1, 0, 1))


def test_bench_preprocess_counts_bytes_and_says_gpu_not_run():
    from optim.ops.bench_preprocess import bench_preprocess

    r = bench_preprocess((48, 64, 3), PreprocessOp(out_h=24, out_w=24), batch=2, iterations=2)
    assert r.h2d_bytes_host_path == 3 * 24 * 24 * 4 and r.h2d_bytes_fused == 48 * 64 * 3
    assert r.host_ms_numpy > 0 and r.host_ms_cpu_library is not None and r.host_ms_cpu_library > 0
    assert r.gpu_kernel_ms is None and r.gpu_note.startswith("not run")
    assert r.kernel_bytes_per_image == 48 * 64 * 3 + 3 * 24 * 24 * 4  # frame read + output written
    assert r.gpu_timings == [] and r.gpu_baseline_ms is None and r.peak_fraction is None


@pytest.mark.slow  # an optim subprocess timing the op
def test_cli_bench_preprocess_writes_json(tmp_path):
    import json

    out = tmp_path / "bench.json"
    p = optim("bench-preprocess", "--frame", "36x48", "--size", "16x16", "--out-dtype", "float16", "--batch", "3",
              "--iterations", "2", "--json", out)
    assert p.returncode == 0, p.stderr
    assert "GPU kernel time: not run" in p.stdout
    r = json.loads(out.read_text())
    assert r["batch"] == 3 and r["kernel_bytes_per_image"] == 36 * 48 * 3 + 3 * 16 * 16 * 2
    assert r["gpu_kernel_ms"] is None and r["gpu_timings"] == [] and r["gpu_note"].startswith("not run")
    assert_one_line_error(optim("bench-preprocess", "--batch", "0"), 2, "--batch")
