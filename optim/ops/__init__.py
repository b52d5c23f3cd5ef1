"""Custom operators that optim ships: one definition, a NumPy reference, two runtimes.

Each op is declared once (name, domain, attributes), runs in TensorRT through a plugin
from ``csrc/`` and in ONNX Runtime on CPU through the same C++ arithmetic (a library
built from ``csrc/`` and called from an onnxruntime-extensions custom op).
"""
