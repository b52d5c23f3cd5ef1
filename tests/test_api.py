"""The Python API (``optim/api/``): the README's example as written, each function on small inputs,
bad input raising the project's exceptions (never SystemExit), and ``import optim`` staying cheap."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO
from tests.helpers.models import TINY_SHAPE

HEAVY = ("torch", "onnxruntime", "onnx", "openvino", "modelopt", "typer", "optim.api", "optim.workflow.run")


def readme_example() -> str:
    """The first ```python block under the README's "## Python API" heading (before the next "## ")."""
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Python API\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else None]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no ```python block in the README's Python API section"
    return m.group(1)


def test_import_optim_is_cheap():
    code = ("import sys, optim; before = [m for m in %r if m in sys.modules]; f = optim.check; "
            "import optim.api; after = [m for m in %r if m in sys.modules and m != 'optim.api']; "
            "print(before, after, callable(f), optim.run is optim.api.run)") % (HEAVY, HEAVY)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[]", "[]", "True", "True"], p.stdout  # even optim.api imports none of them
    p = subprocess.run([sys.executable, "-c", "import optim; optim.nothing"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert "AttributeError" in p.stderr and "nothing" in p.stderr


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's example, run in-process in a folder of its own (recipes/ and calib/ linked there,
    so its run folder and output file land in that folder): (its namespace, what it printed)."""
    where = tmp_path_factory.mktemp("readme_example")
    for name in ("recipes", "calib"):
        (where / name).symlink_to(REPO / name)
    ns: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    old = Path.cwd()
    os.chdir(where)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(readme_example(), "README.md (Python API)", "exec"), ns)
    finally:
        os.chdir(old)
    return ns, out.getvalue(), where


@pytest.mark.slow  # the example runs optim run on the default recipe (about 40 s on 2 cores)
def test_readme_example_prints_each_entry_and_the_check(example):
    ns, printed, _ = example
    lines = printed.splitlines()
    entries = [ln for ln in lines if re.fullmatch(r"(fp32|fp16)@\w+: top-1 \d+\.\d\d%, (\d+\.\d\dx fp32|not timed)", ln)]
    assert {ln.split("@")[0] for ln in entries} == {"fp32", "fp16"}, printed
    assert any(ln.startswith("fp32@onnxruntime: top-1 ") and "1.00x fp32" in ln for ln in entries), printed
    last = [ln for ln in lines if ln.startswith("int8-onnxruntime: top-1 ")]
    assert last and last[-1].endswith("gates passed: True"), printed


@pytest.mark.slow
def test_readme_example_returns_typed_results(example):
    import optim
    from optim.stages.check import CheckResult
    from optim.stages.quantize.stage import QuantizeReport
    from optim.stages.report.stage import Row

    ns, _, where = example
    res, q, c = ns["res"], ns["q"], ns["c"]
    assert isinstance(res, optim.RunResult) and res.passed and res.error is None
    assert res.folder == Path("artifacts/fashion_resnet") and (where / res.folder / "manifest.json").is_file()
    assert {"md", "html", "json"} <= set(res.reports)
    assert all(isinstance(r, Row) for r in res.rows) and res.task == "classification"
    assert ("top1", "top-1 %") in res.columns
    fp32 = res.row("fp32")
    assert fp32.backend == "onnxruntime" and fp32.accuracy["top1"] > 85 and fp32.speedup_vs_fp32 == 1.0
    with pytest.raises(KeyError, match="rows: fp16, fp32"):
        res.row("int8-tensorrt")
    assert isinstance(q, QuantizeReport) and q.tag == "int8-onnxruntime" and (where / q.path).is_file()
    assert isinstance(c, CheckResult) and c.passed and c.samples == 500 and c.accuracy["top1"] > 85
    assert {g.gate for g in c.gates} == {"max_top1_drop", "min_cosine"}  # the recipe's gates for the entry


def test_quantize_check_bench_on_arrays(tmp_path, tiny_onnx, calib_x, eval_xy):
    import optim
    from optim.errors import GateError
    from optim.settings import BenchSettings, QuantizeSettings
    from optim.stages.bench import BenchResult

    x, y = eval_xy
    out = tmp_path / "tiny.int8.onnx"
    q = optim.quantize(str(tiny_onnx), settings=QuantizeSettings(precision="int8", target="onnxruntime"),
                       calib=calib_x, output=out)  # the README's example passes the options as keywords
    assert q.path == str(out) and out.is_file() and q.calibration_samples == len(calib_x)
    assert q.tag == "int8-onnxruntime" and q.coverage["quantized"] == q.coverage["eligible"]

    c = optim.check(out, tiny_onnx, x, labels=y, samples=32, max_top1_drop=50.0)
    assert c.passed and c.samples == 32 and c.accuracy["top1_delta"] >= -50
    tight = optim.check(out, tiny_onnx, x, labels=y, min_cosine=1.5)  # no candidate reaches it
    assert not tight.passed and [g.gate for g in tight.gates if not g.passed] == ["min_cosine"]
    with pytest.raises(GateError, match="min_cosine") as exc:
        optim.check(out, tiny_onnx, x, min_cosine=1.5, raise_on_failure=True)
    assert exc.value.exit_code == 3
    synthetic = optim.check(out, tiny_onnx, "synthetic:16")  # a --data string, no labels
    assert synthetic.samples == 16 and synthetic.accuracy is None

    one = optim.bench(tiny_onnx, batch_sizes=(1, 4), warmup=1, iterations=3)
    assert isinstance(one, BenchResult) and [t.batch for t in one.timings] == [1, 4]
    both = optim.bench([tiny_onnx, out], settings=BenchSettings(batch_sizes=(2,), warmup=0, iterations=2))
    assert [Path(b.model).name for b in both] == [tiny_onnx.name, out.name]


def test_export_a_module_and_a_source(tmp_path):
    import optim
    from optim.stages.export import ExportReport
    from tests.helpers.models import tiny_cnn

    rep = optim.export(tiny_cnn(), output=tmp_path / "m.onnx", input_shape=TINY_SHAPE, output_names="logits",
                       batch_max=8)
    assert isinstance(rep, ExportReport) and (tmp_path / "m.onnx").is_file() and rep.max_abs_error < 1e-3
    rep = optim.export("tests.conftest:tiny_cnn", output=str(tmp_path / "s.onnx"), input_shape="3,16,16")
    assert rep.verify_batches and (tmp_path / "s.onnx").is_file()


def test_build(tmp_path, tiny_onnx):
    import optim
    from optim.errors import BackendUnavailable
    from optim.backends.machine import probe

    src = tmp_path / tiny_onnx.name
    src.write_bytes(tiny_onnx.read_bytes())
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable):
            optim.build(src, target="rtx", batch=(1, 2, 4))
    else:
        rep = optim.build(src, target="rtx", batch=(1, 2, 4))
        assert Path(rep.engine).name == "tiny.fp32.rtx.plan" and (tmp_path / "tiny.fp32.rtx.plan").is_file()
    if probe().tensorrt is None:  # no TensorRT here: the H100 build says so, as exit 5 would
        with pytest.raises(BackendUnavailable):
            optim.build(src, target="h100", output=tmp_path / "h.plan")


@pytest.mark.parametrize("call, error, fragment", [
    (lambda d, m: __import__("optim").quantize(d / "missing.onnx", "int8"), "InputError", "not found"),
    (lambda d, m: __import__("optim").quantize(m, "int4", calib="synthetic:8", output=d / "o.onnx"),
     "RecipeError", "int4"),
    (lambda d, m: __import__("optim").quantize(m, "int8", output=d / "o.onnx"), "InputError", "calibration data"),
    (lambda d, m: __import__("optim").check(m, m, np.zeros((4, 3, 8, 8), np.float32)), "DataError", "wants [3, 16, 16]"),
    (lambda d, m: __import__("optim").check(m, m, "synthetic:4", max_map_drop=1.0), "InputError",
     "max_map_drop is not a gate of task classification"),
    (lambda d, m: __import__("optim").check(m, m, "synthetic:4", labels=np.zeros(2, np.int64)), "DataError", "2 labels"),
    (lambda d, m: __import__("optim").bench(m, settings={"iterations": 1}), "InputError", "BenchSettings"),
    (lambda d, m: __import__("optim").bench(m, iterations=0), "RecipeError", "iterations"),
    (lambda d, m: __import__("optim").build(m, batch=(1, 2)), "InputError", "min,opt,max"),
    (lambda d, m: __import__("optim").export(None, output=d / "e.onnx"), "InputError", "input_shape"),
    (lambda d, m: __import__("optim").run(d / "nothing.yaml"), "InputError", "nothing.yaml"),
    (lambda d, m: __import__("optim").run(REPO / "recipes/fashion_resnet.yaml", precisions="int4", out_root=d),
     "InputError", "'int4'"),
])
def test_bad_input_raises_the_projects_errors(tmp_path, tiny_onnx, call, error, fragment):
    from optim import errors

    with pytest.raises(errors.OptimError) as exc:
        call(tmp_path, tiny_onnx)
    assert isinstance(exc.value, getattr(errors, error)), repr(exc.value)
    assert isinstance(exc.value, errors.InputError) and exc.value.exit_code == 2
    assert fragment in str(exc.value), str(exc.value)
