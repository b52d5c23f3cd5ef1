"""The CLI as a user meets it: help, happy paths, and one-line errors for bad input."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from tests.helpers import REPO
from tests.helpers.cli import assert_one_line_error, optim
from tests.helpers.models import TINY_SHAPE

COMMANDS = ["export", "quantize", "check", "bench", "report", "run"]


@pytest.mark.parametrize("cmd", [None, *COMMANDS])
def test_help(cmd):
    p = optim(*([cmd] if cmd else []), "--help")
    assert p.returncode == 0
    assert "Usage" in p.stdout
    assert "<bool>" not in p.stdout  # plain flags take no value
    if cmd is None:
        assert all(c in p.stdout for c in COMMANDS)
    if cmd == "export":
        assert "Usage: optim export [OPTIONS] [MODEL]" in p.stdout
        flat = " ".join(p.stdout.split())
        assert "pretrained:NAME" in flat and "required unless --recipe names one" in flat


def test_a_clamped_sample_count_is_said(capsys):
    from optim.data.loaders import load_dataset
    from optim.settings import DataSpec

    ds = load_dataset(DataSpec(kind="synthetic", count=32), (3, 8, 8)).head(64)
    assert len(ds) == 32
    ds.clamp_note(64)
    err = capsys.readouterr().err
    assert "asked for 64 samples of" in err and "using all 32" in err


def _npy(tmp_path, name, arr):
    p = tmp_path / name
    np.save(p, arr, allow_pickle=arr.dtype == object)
    return p


@pytest.fixture
def calib_file(tmp_path, calib_x):
    return _npy(tmp_path, "calib.npy", calib_x)


@pytest.mark.slow  # quantizes in an optim subprocess
def test_quantize_cli_writes_model(tmp_path, tiny_onnx, calib_file):
    out = tmp_path / "out.onnx"
    p = optim("quantize", tiny_onnx, "--precision", "int8", "--target", "onnxruntime", "--calib",
              calib_file, "--method", "max", "-o", out)
    assert p.returncode == 0, p.stderr
    assert out.is_file() and "Conv/Gemm/MatMul quantized" in p.stderr


@pytest.mark.slow  # quantizes in optim subprocesses
def test_quantize_takes_the_recipes_method(tmp_path, tiny_onnx, calib_file):
    """--recipe brings the recipe's quantize options; a flag still wins over them."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {source: 'tests.conftest:tiny_cnn'}\ninput: {shape: [3, 16, 16]}\n"
                      "calibration: {data: {kind: synthetic, count: 8}}\n"
                      "evaluation: {data: {kind: synthetic, count: 8}}\nprecisions: [fp32]\n"
                      "quantize: {method: max}\n")
    p = optim("quantize", tiny_onnx, "--precision", "int8", "--calib", calib_file, "--recipe", recipe,
              "-o", tmp_path / "a.onnx")
    assert p.returncode == 0, p.stderr
    assert "ptq, max;" in p.stderr
    p = optim("quantize", tiny_onnx, "--precision", "int8", "--calib", calib_file, "--recipe", recipe,
              "--method", "entropy", "-o", tmp_path / "b.onnx")
    assert p.returncode == 0, p.stderr
    assert "ptq, entropy;" in p.stderr


@pytest.mark.parametrize("case", ["corrupt", "truncated", "missing", "empty"])
def test_quantize_bad_onnx(tmp_path, tiny_onnx, calib_file, case):
    bad = tmp_path / "bad.onnx"
    if case == "corrupt":
        bad.write_bytes(b"\x08\x07garbage" * 50)
    elif case == "truncated":
        bad.write_bytes(tiny_onnx.read_bytes()[:3000])
    elif case == "empty":
        bad.write_bytes(b"")
    out = tmp_path / "out.onnx"
    p = optim("quantize", bad, "--precision", "int8", "--calib", calib_file, "-o", out)
    assert_one_line_error(p, 2, "bad.onnx")
    assert not out.exists()


@pytest.mark.parametrize("case,fragment", [
    ("wrong_shape", "wants [3, 16, 16]"),
    ("nan", "NaN or inf"),
    ("empty", "empty"),
    ("objects", "never unpickles"),
    ("missing", "not found"),
])
def test_quantize_bad_calibration_data(tmp_path, tiny_onnx, calib_x, case, fragment):
    arrays = {
        "wrong_shape": np.zeros((4, 3, 8, 8), np.float32),
        "nan": np.where(np.arange(calib_x.size).reshape(calib_x.shape) == 5, np.nan, calib_x),
        "empty": np.zeros((0, *TINY_SHAPE), np.float32),
        "objects": np.array([{"a": 1}, None], dtype=object),
    }
    data = _npy(tmp_path, "c.npy", arrays[case]) if case in arrays else tmp_path / "nope.npy"
    out = tmp_path / "out.onnx"
    p = optim("quantize", tiny_onnx, "--precision", "int8", "--calib", data, "-o", out)
    assert_one_line_error(p, 2, fragment)
    assert not out.exists()


def test_bad_precision_name(tmp_path, tiny_onnx, calib_file):
    p = optim("quantize", tiny_onnx, "--precision", "int4", "--calib", calib_file)
    assert_one_line_error(p, 2, "precision", "int8")


def test_unknown_recipe_key(tmp_path):
    text = (REPO / "recipes/fashion_resnet.yaml").read_text().replace("bench:\n", "bench:\n  turbo: true\n")
    text = text.replace("../calib/", f"{REPO}/calib/")
    r = tmp_path / "bad.yaml"
    r.write_text(text)
    p = optim("run", r, "--out-root", tmp_path / "art")
    assert_one_line_error(p, 2, "unknown key 'turbo'", "bad.yaml")
    assert not (tmp_path / "art").exists()


def test_missing_recipe():
    assert_one_line_error(optim("run", "recipes/nope.yaml"), 2, "nope.yaml")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_pickle_with_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    w = tmp_path / "weights.pt"
    w.write_bytes(pickle.dumps({"conv.weight": _Evil(marker)}))
    out = tmp_path / "m.onnx"
    p = optim("export", "tests.conftest:tiny_cnn", "--weights", w, "--input-shape", "3,16,16", "-o", out)
    assert_one_line_error(p, 2, "weights.pt", "safe loader")
    assert not marker.exists()
    assert not out.exists()


@pytest.mark.slow  # four optim subprocesses, quantizes
def test_export_check_bench_report_cli(tmp_path, calib_x):
    fp32 = tmp_path / "m.onnx"
    p = optim("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "--output-name",
              "logits", "-o", fp32)
    assert p.returncode == 0, p.stderr
    assert "max abs error" in p.stderr and fp32.is_file()

    x = calib_x
    data = tmp_path / "eval.npz"
    np.savez(data, images=x, labels=np.zeros(len(x), np.int64))
    q = tmp_path / "m.fp16.onnx"
    assert optim("quantize", fp32, "--precision", "fp16", "-o", q).returncode == 0
    js = tmp_path / "check.json"
    p = optim("check", q, "--reference", fp32, "--data", data, "--min-cosine", "0.99", "--json", js)
    assert p.returncode == 0, p.stderr
    assert "cosine" in p.stdout and "task accuracy on 32 labelled samples" in p.stdout
    assert "gate min_cosine passed" in p.stdout and js.is_file()

    p = optim("check", q, "--reference", fp32, "--data", data, "--max-abs-error", "0")
    assert p.returncode == 3
    assert "gate max_abs_error FAILED" in p.stdout
    assert_one_line_error(p, 3, "max_abs_error", "limit 0")

    p = optim("bench", fp32, q, "--batch-sizes", "1,2", "--iterations", "3", "--warmup", "1",
              "--json", tmp_path / "bench.json")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("m.fp16.onnx") >= 2 and "p99 ms" in p.stdout

    p = optim("report", tmp_path / "nothing-here")
    assert_one_line_error(p, 2, "not found")


def test_debug_shows_traceback(tmp_path):
    p = optim("--debug", "run", tmp_path / "nope.yaml")
    assert p.returncode == 2 and "Traceback" in p.stderr
