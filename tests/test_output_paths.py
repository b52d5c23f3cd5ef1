"""Output locations and failed writes: checked before any work, one line naming the path.

A directory where a file is wanted, a regular file in the way of a folder, a device or
pipe, a folder optim may not write in: exit 2 (OutputPathError) before anything runs.
A write that fails (disk full, I/O error) becomes a WriteError (exit 4) naming the path,
and the stage where one is known, and leaves no partial file.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optim.artifacts import (
    atomic_path,
    check_output_dir,
    check_output_file,
    write_json,
    write_text,
)
from optim.errors import ModelError, OutputPathError, RecipeError, WriteError
from tests.helpers.models import TINY_SHAPE
from tests.helpers.cli import assert_one_line_error, optim

RECIPE = ("name: tiny\nmodel: {source: 'tests.conftest:tiny_cnn'}\ninput: {shape: [3, 16, 16]}\n"
          "export: {output_names: [logits]}\n"
          "calibration: {data: {kind: synthetic, count: 8}}\n"
          "evaluation: {data: {kind: synthetic, count: 8}}\nprecisions: [fp32]\n")


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial-" in p.name)


@pytest.fixture
def a_file(tmp_path) -> Path:
    p = tmp_path / "plain.txt"
    p.write_text("not a folder\n")
    return p


@pytest.fixture
def recipe(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(RECIPE)
    return p


# -- output locations: exit 2 before any work -------------------------------------------------

def test_run_out_root_under_a_file_fails_before_any_stage(tmp_path, recipe, a_file):
    t0 = time.perf_counter()
    p = optim("run", recipe, "--out-root", a_file / "runs")
    assert_one_line_error(p, 2, "--out-root", str(a_file), "is a file, not a folder")
    assert time.perf_counter() - t0 < 60
    assert "done" not in p.stderr and "export" not in p.stderr
    assert a_file.read_text() == "not a folder\n"


def test_run_out_root_that_is_a_file(tmp_path, recipe, a_file):
    """--out-root itself may be a folder to make; OUT_ROOT/NAME being a file is refused too."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "tiny").write_text("x")
    p = optim("run", recipe, "--out-root", tmp_path / "runs")
    assert_one_line_error(p, 2, str(tmp_path / "runs" / "tiny"), "is a file, not a folder")


def test_export_to_a_directory_fails_before_exporting(tmp_path):
    d = tmp_path / "outdir"
    d.mkdir()
    p = optim("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "-o", d)
    assert_one_line_error(p, 2, "-o/--output", str(d), "is a directory")
    assert "wrote" not in p.stderr and list(d.iterdir()) == []


def test_export_under_a_file(tmp_path, a_file):
    out = a_file / "x.onnx"
    p = optim("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "-o", out)
    assert_one_line_error(p, 2, str(out), f"{a_file} is a file, not a folder")


def test_export_to_a_pipe_is_refused(tmp_path):
    """A device or pipe would be replaced by the atomic rename: refused up front."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    p = optim("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "-o", fifo)
    assert_one_line_error(p, 2, str(fifo), "not a regular file")
    assert fifo.is_fifo()


def test_check_json_is_a_directory(tmp_path, tiny_onnx):
    d = tmp_path / "json-dir"
    d.mkdir()
    p = optim("check", tiny_onnx, "--reference", tiny_onnx, "--data", "synthetic:8", "--json", d)
    assert_one_line_error(p, 2, "--json", str(d), "is a directory")
    assert p.stdout == ""  # nothing was checked


@pytest.mark.parametrize("cmd", ["bench", "sensitivity", "quantize", "build", "fuse-preprocess", "build-cache"])
def test_every_output_option_is_checked(tmp_path, tiny_onnx, a_file, cmd):
    bad = a_file / "sub" / "out.x"
    args = {
        "bench": ["bench", tiny_onnx, "--json", bad],
        "sensitivity": ["sensitivity", tiny_onnx, "--reference", tiny_onnx, "--data", "synthetic:8", "--json", bad],
        "quantize": ["quantize", tiny_onnx, "--precision", "int8", "--calib", "synthetic:8", "-o", bad],
        "build": ["build", tiny_onnx, "-o", bad],
        "build-cache": ["build", tiny_onnx, "-o", tmp_path / "e.plan", "--timing-cache", bad],
        "fuse-preprocess": ["fuse-preprocess", tiny_onnx, "--frame", "32x32", "-o", bad],
    }[cmd]
    p = optim(*args)
    assert_one_line_error(p, 2, str(bad), f"{a_file} is a file, not a folder")
    assert p.stdout == ""


def test_quantize_default_output_beside_the_input_is_checked(tmp_path, tiny_onnx):
    src = tmp_path / "m.fp32.onnx"
    src.write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "m.fp16.onnx").mkdir()  # where the default output would go
    p = optim("quantize", src, "--precision", "fp16")
    assert_one_line_error(p, 2, str(tmp_path / "m.fp16.onnx"), "is a directory")


def test_report_run_folder_that_is_a_file(a_file):
    p = optim("report", a_file)
    assert p.returncode == 2 and str(a_file) in p.stderr


def test_check_helpers(tmp_path, a_file, monkeypatch):
    assert check_output_file(tmp_path / "new" / "deeper" / "x.json", "--json") == tmp_path / "new" / "deeper" / "x.json"
    assert check_output_dir(tmp_path / "runs" / "r") == tmp_path / "runs" / "r"
    check_output_file(a_file)  # an existing regular file is replaced: fine
    with pytest.raises(OutputPathError, match="is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_dir(a_file, "run folder")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_dir(a_file / "a" / "b", "run folder")
    # no permission / read-only file system (root passes any permission check, so fake it)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == tmp_path else real_access(p, mode, **k))
    with pytest.raises(OutputPathError) as info:
        check_output_file(tmp_path / "x.onnx", "-o/--output")
    assert f"cannot write in {tmp_path}" in str(info.value) and info.value.exit_code == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        p = optim("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "-o", ro / "m.onnx")
        assert_one_line_error(p, 2, "cannot write in", str(ro))
    finally:
        ro.chmod(0o700)


# -- failed writes: WriteError naming the path (and the stage), no partial file -----------------

def test_disk_full_on_rename_names_the_path(tmp_path, monkeypatch):
    out = tmp_path / "res" / "check.json"
    monkeypatch.setattr(os, "replace", _enospc)
    with pytest.raises(WriteError) as info:
        write_json(out, {"a": 1})
    msg = str(info.value)
    assert str(out) in msg and "No space left on device" in msg and "ENOSPC" in msg
    assert info.value.exit_code == 4
    assert not out.exists() and _leftovers(tmp_path) == []


def test_disk_full_while_writing(tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(WriteError, match=str(out)), atomic_path(out) as tmp:
        tmp.write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_real_enospc_from_dev_full(tmp_path):
    """A real ENOSPC from the kernel (writing /dev/full inside the block: the error names no file)."""
    out = tmp_path / "x.bin"
    with pytest.raises(WriteError, match="No space left"), atomic_path(out) as tmp:
        tmp.write_bytes(b"x")
        with open("/dev/full", "wb") as f:
            f.write(b"y" * 100)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_other_errors_in_the_block_are_not_write_errors(tmp_path):
    """Reading a missing input inside the block is that error, not a write failure."""
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.onnx") as tmp:
        tmp.write_bytes((tmp_path / "missing-input.onnx").read_bytes())
    assert _leftovers(tmp_path) == []


def test_folder_in_the_way_at_write_time(tmp_path, a_file):
    with pytest.raises(WriteError, match=f"{a_file} is a file, not a folder"):
        write_text(a_file / "x.txt", "x")
    (tmp_path / "d").mkdir()
    with pytest.raises(WriteError, match="is a directory"):
        write_text(tmp_path / "d", "x")
    assert _leftovers(tmp_path) == []


def test_executor_names_the_stage(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from optim.executor import Executor, StageOutput

    def run(inputs, settings, ctx):
        write_json(ctx.out, {"ok": True})
        return StageOutput({})

    stage = SimpleNamespace(NAME="check", TOOLS=(), run=run)
    ex = Executor(tmp_path / "run")
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: _enospc() if Path(b).name == "fp32.json" else real_replace(a, b))
    with pytest.raises(WriteError) as info:
        ex.step(stage, "check/fp32", "check/fp32.json", [], None, kind="result")
    msg = str(info.value)
    assert msg.startswith("check stage (check/fp32): cannot write ")
    assert str(tmp_path / "run" / "check" / "fp32.json") in msg and msg.count("check stage") == 1
    assert _leftovers(tmp_path) == []


def test_cli_disk_full_is_exit_4_naming_the_path(tmp_path, tiny_onnx, monkeypatch, capsys):
    """In process (so os.replace can fail): bench --json on a full disk is one line, exit 4."""
    from optim.cli import main

    out = tmp_path / "bench.json"
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: _enospc() if Path(b) == out else real_replace(a, b))
    monkeypatch.setattr(sys, "argv", ["optim", "bench", str(tiny_onnx), "--batch-sizes", "1", "--warmup", "0",
                                      "--iterations", "1", "--json", str(out)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 4
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: cannot write ") and str(out) in lines[-1] and "ENOSPC" in lines[-1]
    assert not out.exists() and _leftovers(tmp_path) == []


# -- smaller messages -----------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_empty_weights_file_is_called_empty(tmp_path, suffix):
    from optim.sources import load_state_dict

    w = tmp_path / f"w{suffix}"
    w.write_bytes(b"")
    with pytest.raises(ModelError) as info:
        load_state_dict(w)
    assert "is empty (0 bytes)" in str(info.value) and str(w) in str(info.value)
    assert "Python objects" not in str(info.value)


def test_empty_weights_file_cli(tmp_path):
    w = tmp_path / "w.pt"
    w.write_bytes(b"")
    p = optim("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "--weights", w,
              "-o", tmp_path / "m.onnx")
    assert_one_line_error(p, 2, str(w), "is empty")


def _recipe_with_data(tmp_path, data: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.replace("calibration: {data: {kind: synthetic, count: 8}}", f"calibration: {{data: {data}}}"))
    return p


def test_plain_data_path_in_recipe_says_a_spec_is_expected(tmp_path):
    from optim.recipe import load_recipe

    np.save(tmp_path / "x.npy", np.zeros((4, *TINY_SHAPE), np.float32))
    with pytest.raises(RecipeError) as info:
        load_recipe(_recipe_with_data(tmp_path, "./x.npy"))
    msg = str(info.value)
    assert "calibration.data" in msg and "expects a data spec" in msg
    assert "data: {kind: npy, path: ./x.npy}" in msg and "not a text file" not in msg


@pytest.mark.parametrize("value, hint", [
    ("./calib.npz", "{kind: npz, path: ./calib.npz}"),
    ("train-images-idx3-ubyte", "{kind: idx, path: train-images-idx3-ubyte}"),
    ("synthetic:8", "{kind: synthetic, count: 8}"),
    ("imgs", "{kind: folder, path: imgs}"),
])
def test_other_plain_data_forms_get_their_spec(tmp_path, value, hint):
    from optim.recipe import load_recipe

    (tmp_path / "imgs").mkdir()
    with pytest.raises(RecipeError, match="expects a data spec") as info:
        load_recipe(_recipe_with_data(tmp_path, value))
    assert f"write data: {hint}" in str(info.value)


def test_binary_file_of_unknown_kind_says_a_spec_is_expected(tmp_path):
    from optim.recipe import load_recipe

    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RecipeError) as info:
        load_recipe(_recipe_with_data(tmp_path, "blob.bin"))
    assert "expects a data spec" in str(info.value) and "{kind: KIND, path: blob.bin}" in str(info.value)


def test_plain_data_path_via_cli_is_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, *TINY_SHAPE), np.float32))
    p = optim("run", _recipe_with_data(tmp_path, "./x.npy"), "--out-root", tmp_path / "runs")
    assert_one_line_error(p, 2, "expects a data spec", "data: {kind: npy, path: ./x.npy}")


def test_yaml_spec_file_still_loads(tmp_path):
    from optim.recipe import load_recipe

    (tmp_path / "calib.yaml").write_text("kind: synthetic\ncount: 8\n")
    r = load_recipe(_recipe_with_data(tmp_path, "calib.yaml"))
    assert r.calibration.data.kind == "synthetic" and r.calibration.data.count == 8


def test_disk_full_outside_optims_writers_is_exit_4(tmp_path, monkeypatch, capsys):
    """A tool's own write (a temporary file) hitting a full disk: one line, exit 4, not an internal error."""
    import optim.cli as cli

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli, "app", full)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 4
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: a write in the temporary folder ")
    assert "[ENOSPC]" in lines[0] and "TMPDIR" in lines[0] and "internal error" not in lines[0]
