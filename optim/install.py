"""The commands a user runs for each missing piece (``optim doctor`` and error messages say them).

Plain data with no imports, so any module may use it without an import circle."""

INSTALL = {
    "tensorrt": "bash scripts/setup_gpu.sh (TensorRT 11; --tensorrt 10 for TensorRT 10; README: On a GPU machine)",
    "tensorrt_rtx": ".venv/bin/pip install tensorrt-rtx-cu12==1.7.1.116 "
                    "(pinned in requirements.txt; bash scripts/setup.sh installs it)",
    "onnxruntime-gpu": "bash scripts/setup_gpu.sh (swaps onnxruntime for onnxruntime-gpu; never both)",
    "ort-conflict": ".venv/bin/pip uninstall -y onnxruntime onnxruntime-gpu && .venv/bin/pip install "
                    "--no-deps --force-reinstall onnxruntime-gpu==1.24.4 (or onnxruntime==1.24.4 on CPU)",
    "gpu": "an NVIDIA GPU and its driver (nvidia-smi lists it)",
    "nvcc": "the CUDA 13 toolkit (e.g. .venv/bin/pip install nvidia-cuda-nvcc, or NVIDIA's cuda-toolkit-13 package)",
    "base": "bash scripts/setup.sh",
    "openvino": ".venv/bin/pip install openvino==2026.4.1 "
                "(pinned in requirements.txt; bash scripts/setup.sh installs it)",
}
