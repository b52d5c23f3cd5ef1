"""The Python API: the stage functions the ``optim`` commands call, for notebooks and scripts.

    import optim

    res = optim.run("recipes/fashion_resnet.yaml", precisions="fp32,int8", eval_samples=500)
    for row in res.rows:
        print(row.tag, row.backend, row.accuracy["top1"], row.speedup_vs_fp32)

Every function takes paths as ``str`` or ``Path``; a typed settings object where the stage has one
(``optim.settings``: ``QuantizeSettings``, ``BenchSettings``, ``BuildSettings``, ``ExportSettings``)
or the keyword arguments that build it; data as the strings ``--data`` takes (a spec ``.yaml``, an
``.npz``/``.npy``, an image folder, ``scenes:N``, ``synthetic:N`` ...) or a NumPy array of model
inputs. Each returns the stage's own result (``CheckResult``, ``QuantizeReport``, ``BenchResult``,
``BuildReport``, ``ExportReport``; ``run``: a ``RunResult``; ``quantize`` with ``max_drop``: a
``TunedQuantizeReport``) and raises the project's exception
family (``optim.errors.OptimError``; ``exit_code`` is what the command would exit with), never
``SystemExit``. A failed gate is a result (``passed`` is False), not an error, unless
``raise_on_failure=True`` (then ``GateError``, as ``optim run`` / ``optim check`` exit 3).

``import optim`` imports none of this (``optim.run`` etc. load this package on first use), and its
modules import torch, ONNX Runtime and the stages only inside the functions that need them.
"""

from optim.api.evaluate import bench, check, recipe_gates, task_gates
from optim.api.model import build, export
from optim.api.quantize import TunedQuantizeReport, quantize, quantize_to_budget
from optim.api.run import RunResult, read_run, run

__all__ = ["RunResult", "TunedQuantizeReport", "run", "export", "quantize", "check", "bench", "build", "read_run",
           "recipe_gates", "task_gates", "quantize_to_budget"]
