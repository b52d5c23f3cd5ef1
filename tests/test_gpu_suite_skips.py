"""The GPU suite (tests/gpu/) skips cleanly, with the reason, where a piece is missing, and its CUDA
kernel tests need only a GPU: judged on machine records built by hand, then by running the suite
here (no GPU) with TensorRT, modelopt and onnxslim made unimportable.

Nothing here runs on a GPU; it shows which tests a GPU machine would run or skip, not their results.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from xml.etree import ElementTree

import pytest

from optim.backends.machine import Gpu, Machine
from tests.helpers import REPO
from tests.gpu._env import KERNEL_REASON, reasons

H200 = Gpu(0, "NVIDIA H200", (9, 0), 143771)
FULL = Machine(python="3.11.7", packages={"torch": "2.14.1", "onnx": "1.21.0", "onnxslim": "0.1.98",
                                          "nvidia-modelopt": "0.47.0", "onnxruntime": "1.24.4"},
               ort_providers=["CPUExecutionProvider"], tensorrt="11.4.0.106", torch_cuda="13.0", gpus=[H200],
               driver="580.159")


def _without(m: Machine, *packages: str, **changes) -> Machine:
    return dataclasses.replace(m, packages={k: v for k, v in m.packages.items() if k not in packages}, **changes)


def test_a_complete_gpu_machine_runs_everything():
    assert reasons(FULL) == {"engines": None, "export": None, "run": None, "kernels": None}
    assert reasons(dataclasses.replace(FULL, tensorrt="10.16.1.11"))["run"] is None


def test_gpu_machine_without_tensorrt_skips_engines_and_runs_kernels():
    r = reasons(dataclasses.replace(FULL, tensorrt=None, tensorrt_error="No module named 'tensorrt'"))
    assert r["kernels"] is None
    assert all("TensorRT is not importable" in r[k] for k in ("engines", "export", "run"))
    r = reasons(dataclasses.replace(FULL, tensorrt="12.0.0.1"))
    assert r["kernels"] is None and "optim supports TensorRT 10 and 11" in r["engines"]


def test_gpu_machine_without_modelopt_or_onnxslim_skips_what_needs_them():
    r = reasons(_without(FULL, "nvidia-modelopt"))
    assert r["engines"] is None and r["export"] is None and r["kernels"] is None
    assert "nvidia-modelopt not installed" in r["run"] and "scripts/setup.sh" in r["run"]
    r = reasons(_without(FULL, "onnxslim"))
    assert r["engines"] is None and "onnxslim not installed" in r["export"] and r["run"] == r["export"]
    r = reasons(dataclasses.replace(FULL, ort_providers=[]))
    assert "CPUExecutionProvider" in r["export"]


def test_no_gpu_skips_everything_with_the_reason():
    r = reasons(dataclasses.replace(FULL, gpus=[], cuda_error="torch sees no CUDA device"))
    assert all(v and "no CUDA GPU is visible" in v for v in r.values())


BLOCKER = '''
import sys
from importlib.abc import MetaPathFinder

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorrt", "modelopt", "onnxslim"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Block())
'''


@pytest.mark.slow  # a pytest subprocess over tests/gpu
def test_the_suite_skips_without_errors_where_tensorrt_modelopt_and_onnxslim_are_missing(tmp_path):
    """The H200 failure: the plugin engine test exported its model (onnxslim) before skipping."""
    (tmp_path / "block_imports.py").write_text(BLOCKER)
    xml = tmp_path / "gpu.xml"
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import block_imports, pytest; "
            f"sys.exit(pytest.main(['tests/gpu', '-q', '-p', 'no:cacheprovider', '--junitxml', {str(xml)!r}]))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    results = {}  # test name -> "passed" or "SKIPPED <reason>" / "ERROR ..." / "FAILED ..."
    for case in ElementTree.parse(xml).iter("testcase"):
        what = {c.tag: c.get("message", "") for c in case}
        results[case.get("name")] = ("ERROR" if "error" in what else "FAILED" if "failure" in what else
                                     f"SKIPPED {what['skipped']}" if "skipped" in what else "passed")
    assert len(results) > 20 and not [t for t, r in results.items() if r[:5] in ("ERROR", "FAILE")], results
    engine = [r for t, r in results.items() if t.startswith("test_engine_with_plugin")]
    assert engine and "SKIPPED" in engine[0] and "TensorRT is not importable" in engine[0]
    kernels = [r for t, r in results.items() if "test_cuda_kernel" in t]
    assert len(kernels) == 4 and all("TensorRT" not in r for r in kernels)  # run, or skipped for the GPU only
    if KERNEL_REASON:  # no GPU here
        assert all("SKIPPED" in r and "no CUDA GPU" in r for r in kernels), kernels
