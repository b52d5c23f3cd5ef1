"""`optim doctor` on machine records built by hand, and on this machine."""

from __future__ import annotations

import json

import pytest

from optim.doctor import inventory, render, stages
from optim.backends.engine_compat import TARGETS
from optim.backends.machine import Gpu, Machine
from tests.helpers.cli import optim

H100 = TARGETS["h100"]
BASE = {"torch": "2.14.1", "onnx": "1.21.0", "nvidia-modelopt": "0.47.0"}
CPU = ["AzureExecutionProvider", "CPUExecutionProvider"]


def _cpu_box() -> Machine:
    return Machine(python="3.11.7", packages={**BASE, "onnxruntime": "1.24.4"}, ort_providers=CPU,
                   tensorrt_error="No module named 'tensorrt'", tensorrt_rtx="1.7.1.116", torch_cuda="13.0",
                   cuda_error="torch sees no CUDA device", nvcc="13.0 (/usr/local/bin/nvcc)")


def _h100_box() -> Machine:
    return Machine(python="3.11.7", packages={**BASE, "onnxruntime-gpu": "1.24.4", "tensorrt-cu13": "10.16.1.11"},
                   ort_providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                   tensorrt="10.16.1.11", tensorrt_rtx="1.7.1.116", torch_cuda="13.0", gpus=[Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 81559)],
                   driver="580.65.06", nvcc="13.0 (/usr/local/cuda/bin/nvcc)")


def _by_stage(m: Machine) -> dict:
    return {r.stage: r for r in stages(m, H100)}


def test_cpu_machine_runs_cpu_stages_and_says_how_to_get_tensorrt():
    rows = _by_stage(_cpu_box())
    assert all(rows[s].ok for s in ("export (PyTorch -> ONNX)", "quantize (modelopt, ORT)", "check, bench on CPU (ORT)"))
    build = rows["build TensorRT engines for H100 (sm_90)"]
    assert not build.ok and "TensorRT is not importable" in build.why and "scripts/setup_gpu.sh" in build.why
    assert "no CUDA GPU" in rows["bench --backend ort-cuda"].why
    text = render(_cpu_box(), H100)
    assert "CPU stages only; TensorRT-RTX engines for sm86/89/120 are built; H100 build and GPU bench are skipped" in text
    assert "-> bash scripts/setup_gpu.sh" in text  # the install command under the missing piece
    # TensorRT-RTX builds here without a GPU, and doctor says its engines run only on its GPUs
    assert rows["build TensorRT-RTX engines for sm86/89/120 (no GPU needed)"].ok
    assert "1.7.1.116: builds engines on this machine without a GPU; they run only on RTX and workstation GPUs" in text


def test_without_tensorrt_rtx_doctor_says_how_to_install_it():
    m = _cpu_box()
    m.tensorrt_rtx, m.tensorrt_rtx_error = None, "No module named 'tensorrt_rtx'"
    row = _by_stage(m)["build TensorRT-RTX engines for sm86/89/120 (no GPU needed)"]
    assert not row.ok and "pip install tensorrt-rtx-cu12==1.7.1.116" in row.why
    text = render(m, H100)
    assert "CPU stages only; H100 build" in text and "-> .venv/bin/pip install tensorrt-rtx-cu12" in text


def test_h100_machine_with_tensorrt_runs_everything():
    m = _h100_box()
    assert all(r.ok for r in stages(m, H100)), [r for r in stages(m, H100) if not r.ok]
    assert all(i.ok for i in inventory(m))
    text = render(m, H100)
    assert "0: NVIDIA H100 80GB HBM3, sm_90, 81559 MiB" in text and "580.65.06" in text
    assert "every stage, including TensorRT engines and GPU bench" in text


def test_other_gpu_cannot_build_for_h100():
    m = _h100_box()
    m.gpus = [Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0))]
    assert "must be built on an sm_90 GPU" in _by_stage(m)["build TensorRT engines for H100 (sm_90)"].why
    assert all(r.ok for r in stages(m, H100, "ampere_plus"))


def test_both_onnxruntime_wheels_is_reported_broken_with_the_fix():
    m = _cpu_box()
    m.packages["onnxruntime-gpu"] = "1.24.4"
    ort = next(i for i in inventory(m) if i.name == "onnxruntime")
    assert not ort.ok and "BROKEN" in ort.value and "--force-reinstall" in ort.fix
    assert not _by_stage(m)["check, bench on CPU (ORT)"].ok


@pytest.mark.slow  # optim doctor subprocess probes the machine
def test_doctor_runs_here():
    p = optim("doctor")
    assert p.returncode == 0, p.stderr
    assert "TensorRT" in p.stdout and "Stages (target GPU: H100, sm_90)" in p.stdout and "optim run here:" in p.stdout
    data = json.loads(optim("doctor", "--json").stdout)
    assert {"machine", "items", "stages"} <= set(data)
