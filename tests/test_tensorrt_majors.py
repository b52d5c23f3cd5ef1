"""TensorRT 10 and 11 around the build: the [gpu] extra and scripts/setup_gpu.sh let a user pick
either, ``optim doctor`` names the major and what it implies, an unsupported major is refused.

setup_gpu.sh runs here only with --dry-run, on a copy in a temporary folder (so nothing it
prints could touch this checkout's .venv); whether pip then installs TensorRT needs NVIDIA's
index and a GPU machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from optim.backends.engine_compat import (SUPPORTED_MAJORS, TARGETS, build_blocker, major_implies, tensorrt_major,
                                          tensorrt_unsupported)
from optim.doctor import as_dict, inventory, render
from optim.errors import InputError
from optim.install import INSTALL
from optim.backends.machine import Gpu, Machine
from tests.helpers import REPO

H100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 81559)


def _gpu_extra() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]


def test_the_gpu_extra_allows_both_majors():
    trt = [Requirement(r) for r in _gpu_extra() if r.startswith("tensorrt")]
    assert len(trt) == 1
    for ok in ("10.13.2", "10.16.1.11", "11.1.0.106", "11.4.0.106"):
        assert trt[0].specifier.contains(ok), ok
    for bad in ("10.12.0", "12.0.0"):
        assert not trt[0].specifier.contains(bad), bad


@pytest.fixture
def setup_gpu(tmp_path):
    """scripts/setup_gpu.sh and pyproject.toml copied to a folder with no .venv, run with arguments."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup_gpu.sh", tmp_path / "scripts")
    shutil.copy(REPO / "pyproject.toml", tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(tmp_path / "scripts" / "setup_gpu.sh"), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                                                 "PYTHON": sys.executable})
    return run


@pytest.mark.parametrize("args, version", [((), None), (("--tensorrt", "10"), "10.16.1"),
                                           (("--tensorrt=11",), "11.4.0")])
def test_setup_gpu_installs_the_extra_narrowed_to_the_chosen_major(setup_gpu, args, version):
    p = setup_gpu("--dry-run", *args)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "+ bash scripts/setup.sh" and lines[-1] == "+ .venv/bin/optim doctor"
    assert "+ .venv/bin/python -m pip uninstall -y -q onnxruntime onnxruntime-gpu" in lines
    install = [ln for ln in lines if ln.startswith("+ .venv/bin/python -m pip install")]
    reqs = [Requirement(r) for r in install[0].split()[-len(_gpu_extra()):]]
    assert {r.name for r in reqs} == {Requirement(r).name for r in _gpu_extra()}
    trt = next(r for r in reqs if r.name.startswith("tensorrt"))
    if version is None:
        assert trt == Requirement(next(r for r in _gpu_extra() if r.startswith("tensorrt")))
    else:
        other = "11.4.0" if version.startswith("10") else "10.16.1"
        assert trt.specifier.contains(version) and not trt.specifier.contains(other)


@pytest.mark.parametrize("args", [("--tensorrt",), ("--tensorrt=",), ("--tensorrt", "12"), ("--tensorrt", "9"),
                                  ("--dry-run", "--tensorrt"), ("--cuda", "12")])
def test_setup_gpu_refuses_a_bad_choice_before_doing_anything(setup_gpu, args):
    p = setup_gpu(*args)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.startswith("error: "), (p.stdout, p.stderr)


def test_majors_and_what_they_imply():
    assert SUPPORTED_MAJORS == (10, 11)
    assert tensorrt_major("11.4.0.106") == 11 and tensorrt_major("10.16.1.11") == 10 and tensorrt_major(10) == 10
    with pytest.raises(InputError):
        tensorrt_major("unknown")
    assert "STRONGLY_TYPED creation flag" in major_implies(10) and "builder flags" in major_implies(10)
    assert "every network is strongly typed" in major_implies(11) and "no longer exist" in major_implies(11)
    assert "not supported" in major_implies(12)
    assert "--tensorrt" in INSTALL["tensorrt"] and "setup_gpu.sh" in INSTALL["tensorrt"]


def _h100(trt: str | None) -> Machine:
    return Machine(python="3.11.7", packages={"torch": "2.14.1", "onnx": "1.21.0", "nvidia-modelopt": "0.47.0",
                                              "onnxruntime": "1.24.4"}, ort_providers=["CPUExecutionProvider"],
                   tensorrt=trt, tensorrt_error="" if trt else "No module named 'tensorrt'", gpus=[H100],
                   driver="580.65.06")


@pytest.mark.parametrize("version, fragment", [("10.16.1.11", "TensorRT 10: strongly typed networks by the"),
                                               ("11.4.0.106", "TensorRT 11: every network is strongly typed")])
def test_doctor_names_the_major_and_what_it_implies(version, fragment):
    m = _h100(version)
    item = next(i for i in inventory(m) if i.name == "TensorRT")
    assert item.ok and item.value.startswith(version) and fragment in item.value
    assert fragment in render(m, TARGETS["h100"]) and build_blocker(m, TARGETS["h100"]) is None
    info = as_dict(m, TARGETS["h100"])["tensorrt"]
    assert info["major"] == int(version.split(".")[0]) and fragment in info["implies"]
    assert info["supported_majors"] == [10, 11]


def test_doctor_and_build_refuse_an_unsupported_major():
    m = _h100("12.0.0.3")
    item = next(i for i in inventory(m) if i.name == "TensorRT")
    assert not item.ok and "NOT SUPPORTED" in item.value and item.fix == INSTALL["tensorrt"]
    assert "optim supports TensorRT 10 and 11" in tensorrt_unsupported(m)
    assert "optim supports TensorRT 10 and 11" in build_blocker(m, TARGETS["h100"])
    assert tensorrt_unsupported(dataclasses.replace(m, tensorrt=None)) is None  # missing is another reason
