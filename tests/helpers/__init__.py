"""Helpers shared by the test modules; a test module imports from here (or uses a conftest fixture),
never from another test module.

- ``models``: the tiny CNN (``tiny_cnn``, ``TINY_SHAPE``), the raw-detection identity graph, the small
  typed Gemm graphs of the build tests
- ``cli``: ``optim`` in a subprocess, ``invoke`` in this process, ``assert_one_line_error``, the
  ``add-nms`` app
- ``runs``: the tiny recipe ``TINY`` and a run folder written by hand (``write_run_folder``)
- ``detectors``: the fixed-weight square detector in the Ultralytics layout and its COCO data
- ``detector_corpus``: export-shaped detectors (the bundled detector in several export layouts)
- ``runners``: ``ToyRunner``, a registered backend that is not one
- ``plugins``: the fused (preprocessing + tiny CNN) model
- ``csrc``: the csrc/ preprocessing libraries (paths, ``Params``, ``build_if_missing``)
- ``processes``: the quantize workers of a process, and whether a PID is alive (from /proc)
- ``fake_tensorrt``, ``fake_tensorrt_versions``, ``tensorrt_bindings``: the recording fake of the
  ``tensorrt`` module, made to mimic TensorRT 10 or 11 from the binding sources
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
