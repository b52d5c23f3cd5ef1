"""`optim doctor` on machine records built by hand, and on this machine."""

from __future__ import annotations

import json

import pytest

from optim.doctor import backend_rows, inventory, render, stages
from optim.backends.engine_compat import TARGETS
from optim.backends.machine import Gpu, Machine
from tests.helpers.cli import optim

H100 = TARGETS["h100"]
BASE = {"torch": "2.14.1", "torchvision": "0.29.1", "onnx": "1.21.0", "onnxslim": "0.1.80", "nvidia-modelopt": "0.47.0",
        "matplotlib": "3.10.8", "tritonclient": "2.69.0"}  # what scripts/setup.sh installs
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
    """Doctor's stage rows by "stage: what", the what cut to its first word ("check: on", "build: TensorRT-RTX")."""
    return {r.stage.split(" ")[0] + " " + r.stage.split(" ")[1]: r for r in stages(m, H100)}


def test_cpu_machine_runs_cpu_stages_and_says_how_to_get_tensorrt():
    rows = _by_stage(_cpu_box())
    assert all(rows[s].ok for s in ("export: PyTorch", "quantize: INT8/FP8", "check: on", "bench: on"))
    assert [r.stage.split(":")[0] for r in stages(_cpu_box(), H100)] == [
        "export", "quantize", "tune", "study", "fuse", "resize", "nms", "build", "build", "check", "check", "bench",
        "bench", "report", "deploy"]  # the registry's order: the order a run takes them
    build = rows["build: TensorRT"]
    assert not build.ok and "TensorRT is not importable" in build.why and "scripts/setup_gpu.sh" in build.why
    backends = {r.backend: r for r in backend_rows(_cpu_box())}
    assert "no CUDA GPU" in backends["ort-cuda"].why and not backends["tensorrt"].ok
    assert backends["onnxruntime, cpu"].ok and backends["onnxruntime, cpu"].family
    assert backends["openvino"].family and not backends["openvino"].ok  # not installed on this box
    assert "pip install openvino" in backends["openvino"].why and not backends["openvino-bf16"].family
    text = render(_cpu_box(), H100)
    assert "CPU stages only; TensorRT-RTX engines for sm86/89/120 are built; H100 build and GPU bench are skipped" in text
    assert "-> bash scripts/setup_gpu.sh" in text  # the install command under the missing piece
    # TensorRT-RTX builds here without a GPU, and doctor says its engines run only on its GPUs
    assert rows["build: TensorRT-RTX"].ok and not rows["check: TensorRT"].ok
    assert "1.7.1.116: builds engines on this machine without a GPU; they run only on RTX and workstation GPUs" in text


def test_without_tensorrt_rtx_doctor_says_how_to_install_it():
    m = _cpu_box()
    m.tensorrt_rtx, m.tensorrt_rtx_error = None, "No module named 'tensorrt_rtx'"
    row = _by_stage(m)["build: TensorRT-RTX"]
    assert not row.ok and "pip install tensorrt-rtx-cu12==1.7.1.116" in row.why
    text = render(m, H100)
    assert "CPU stages only; H100 build" in text and "-> .venv/bin/pip install tensorrt-rtx-cu12" in text


def test_h100_machine_with_tensorrt_runs_everything():
    m = _h100_box()
    assert all(r.ok for r in stages(m, H100)), [r for r in stages(m, H100) if not r.ok]
    assert all(r.ok for r in backend_rows(m) if not r.backend.startswith("openvino"))
    assert all(i.ok for i in inventory(m))
    text = render(m, H100)
    assert "0: NVIDIA H100 80GB HBM3, sm_90, 81559 MiB" in text and "580.65.06" in text
    assert "every stage, including TensorRT engines and GPU bench" in text


def test_other_gpu_cannot_build_for_h100():
    m = _h100_box()
    m.gpus = [Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0))]
    assert "must be built on an sm_90 GPU" in _by_stage(m)["build: TensorRT"].why
    assert all(r.ok for r in stages(m, H100, "ampere_plus"))


def test_both_onnxruntime_wheels_is_reported_broken_with_the_fix():
    m = _cpu_box()
    m.packages["onnxruntime-gpu"] = "1.24.4"
    ort = next(i for i in inventory(m) if i.name == "onnxruntime")
    assert not ort.ok and "BROKEN" in ort.value and "--force-reinstall" in ort.fix
    assert not _by_stage(m)["check: on"].ok and not _by_stage(m)["quantize: INT8/FP8"].ok
    assert "both onnxruntime and onnxruntime-gpu" in backend_rows(m)[0].why


@pytest.mark.slow  # optim doctor subprocess probes the machine
def test_doctor_runs_here():
    p = optim("doctor")
    assert p.returncode == 0, p.stderr
    assert "TensorRT" in p.stdout and "Stages (target GPU: H100, sm_90)" in p.stdout and "optim run here:" in p.stdout
    data = json.loads(optim("doctor", "--json").stdout)
    assert {"machine", "items", "stages", "backends", "tasks"} <= set(data)
    assert "* onnxruntime, cpu" in p.stdout and "classification, detection" in p.stdout


def test_a_stage_without_its_tools_says_what_is_missing():
    m = _cpu_box()
    del m.packages["tritonclient"]
    row = _by_stage(m)["deploy: a"]
    assert not row.ok and row.why == "tritonclient missing: bash scripts/setup.sh"
