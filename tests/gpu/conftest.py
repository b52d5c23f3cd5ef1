"""GPU suite fixtures: one `optim run` of the bundled default recipe, engines and all.

Run on a GPU machine (after scripts/setup_gpu.sh):  .venv/bin/python -m pytest -m gpu -rs tests/gpu
Without TensorRT (10 or 11), an sm_90 GPU or what `optim run` needs (nvidia-modelopt ...), the
tests that need them skip, and -rs prints why; the CUDA kernel tests need only a GPU.
"""

from __future__ import annotations

import pytest

from tests.gpu._env import RUN_REASON
from tests.helpers.cli import optim


@pytest.fixture(scope="session")
def gpu_run(tmp_path_factory):
    if RUN_REASON:
        pytest.skip(RUN_REASON)
    out = tmp_path_factory.mktemp("gpu_artifacts")
    p = optim("run", "recipes/fashion_resnet.yaml", "--out-root", out, "--eval-samples", "2000",
              "--calib-samples", "256", "--bench-iterations", "20")
    assert p.returncode == 0, p.stderr[-4000:]
    return out / "fashion_resnet", p
