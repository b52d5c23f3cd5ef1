"""Quantize an FP32 ONNX file: INT8 and FP8 Q/DQ through modelopt or ONNX Runtime, FP16 and BF16.

    stage.py     the stage: settings, the per-entry step, and the worker process it runs in
    worker.py    ``python -m optim.stages.quantize.worker JOB_DIR``: one quantization, alone
    scheme.py    which INT8 format an onnxruntime-target file gets on this CPU class
"""
