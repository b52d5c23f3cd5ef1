"""Stage: compare a candidate with the FP32 reference on the same inputs.

Inputs: the candidate (ONNX or engine), the FP32 reference, the evaluation data.
The task (``optim.tasks``) decides the per-output comparison, the task accuracy
with labels and its change vs FP32, and the gates; this module runs both models
on a backend (``optim.backends``) and writes one JSON result. Gates turn the
numbers into a pass/fail that the CLI and CI act on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from optim.artifacts import Artifact, Data, write_json
from optim.backends import backend_packages, open_runner, run_batched
from optim.runfolder.entry import PRIMARY
from optim.errors import DataError, GateError
from optim.executor import StageContext, StageOutput
from optim.settings import Strict
from optim.tasks import GateResult, get_task
from optim.tasks.classification import output_deltas, topk_accuracy  # noqa: F401  (re-exported)

NAME = "check"
SUMMARY = "candidate vs FP32: output deltas, task accuracy, gates"
#: the packages of every registered backend (any of them may run the model)
TOOLS = backend_packages


class Settings(Strict):
    """One check: how to run the models, and the task's gates for this candidate."""

    task: str = "classification"
    batch_size: int = Field(default=256, ge=1)
    threads: int | None = Field(default=None, ge=1)
    backend: str = "auto"
    #: where the FP32 reference runs: always the plain FP32 path, whatever runs the candidate
    reference_backend: str = "auto"
    gates: dict[str, float | None] = Field(default_factory=dict, description="the task's gate model, dumped")
    warnings: tuple[str, ...] = Field(default=(), description="known reasons the numbers mean little "
                                                             "(a run's 'random weights')")


@dataclass
class CheckResult:
    tag: str
    candidate: str
    reference: str
    samples: int
    method: str
    reference_method: str
    outputs: dict[str, dict[str, float]]
    accuracy: dict[str, float] | None = None
    gates: list[GateResult] = field(default_factory=list)
    data: str = ""
    task: str = "classification"
    #: why the fidelity numbers (cosine, agreement) are not meaningful: the reference cannot
    #: discriminate (``Task.reference_warnings``), or, set by a run, untrained weights
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CheckResult:
        d = {k: v for k, v in d.items() if k != "passed"}
        d["gates"] = [GateResult(**g) for g in d.get("gates", [])]
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> CheckResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def failures(self) -> list[str]:
        return [g.line(self.tag) for g in self.gates if not g.passed]

    def summary(self) -> str:
        text = get_task(self.task).summary(self.outputs, self.accuracy)
        return text + (f"; NOT MEANINGFUL: {'; '.join(self.warnings)}" if self.warnings else "")


def run_model(path: Path, x: np.ndarray, s: Settings, what: str,
              backend: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    with open_runner(path, threads=s.threads, backend=backend or s.backend) as runner:
        outs = run_batched(runner, x, s.batch_size, description=what)
        return outs, runner.method


def _rel(path: Path, root: Path | None) -> str:
    if root is not None and Path(path).is_relative_to(root):
        return str(Path(path).relative_to(root))
    return str(path)


def run(inputs: list[Artifact], settings: Settings, ctx: StageContext | None) -> StageOutput:
    """``inputs``: candidate, reference, evaluation ``Data``. Writes the result to ``ctx.out``.

    The candidate is fed ``data.frames`` when it takes raw frames (fused preprocessing),
    else ``data.x``; the reference always gets ``data.x``. Reference outputs are kept in
    ``ctx.memo`` so that the checks of one run compute them once."""
    cand, ref, data = inputs
    assert isinstance(data, Data)
    task = get_task(settings.task)
    gates = task.gates_model(**settings.gates)
    memo = ctx.memo if ctx is not None else {}
    ref_key = f"reference:{ref.sha256}:{data.sha256}:{settings.reference_backend}:{settings.threads}"
    if ref_key not in memo:
        memo[ref_key] = run_model(ref.path, data.x, settings, f"reference {ref.name}", settings.reference_backend)
    ref_out, ref_method = memo[ref_key]
    warnings = list(settings.warnings) + task.reference_warnings(ref_out, data.labels)
    cand_x = data.x if data.frames is None or _takes_floats(cand.path) else data.frames
    if cand.sha256 == ref.sha256 and cand_x is data.x and settings.backend == settings.reference_backend:
        got, method = ref_out, ref_method  # the reference against itself: nothing to run again
    else:
        got, method = run_model(cand.path, cand_x, settings, f"check {cand.tag or cand.name}")
    missing = set(ref_out) - set(got)
    if missing:
        raise DataError(f"{cand.path} lacks outputs {sorted(missing)} of the reference")
    outputs = {k: task.output_deltas(ref_out[k], got[k]) for k in ref_out}
    accuracy = task.compare(ref_out, got, data.labels) if data.labels is not None else None
    root = ctx.root if ctx is not None else None
    res = CheckResult(cand.tag or cand.name, _rel(cand.path, root), _rel(ref.path, root), len(data.x), method,
                      ref_method, outputs, accuracy, data=data.description, task=task.name, warnings=warnings)
    res.gates = task.apply_gates(outputs, accuracy, gates)
    if ctx is not None:
        write_json(ctx.out, res.as_dict())
    return StageOutput(settings.model_dump(mode="json"), res)


def _takes_floats(path: Path) -> bool:
    """Whether a model file takes the preprocessed float input (not raw uint8 frames)."""
    if Path(path).suffix in (".plan", ".engine"):
        return False
    from optim.onnx_tools import load_onnx
    from optim.ops.preprocess import has_op

    return not has_op(load_onnx(path, check=False))


def raise_on_failures(results: list[CheckResult], strict: bool = False) -> None:
    """GateError (exit 3) naming the first failed gate; with ``strict``, a check flagged NOT MEANINGFUL
    fails too (CI that must not pass on a reference that cannot discriminate)."""
    lines = [line for r in results for line in r.failures()]
    if strict:
        lines += [f"{r.tag} is NOT MEANINGFUL ({r.warnings[0]}); --strict / check.strict fails on that"
                  for r in results if r.warnings]
    if lines:
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        raise GateError(lines[0] + more)


def check_files(candidate: Path, reference: Path, data: Data, settings: Settings, tag: str = "") -> CheckResult:
    """The stage on two files, outside a run folder (``optim check``)."""
    cand = Artifact.of_file(candidate, tag or Path(candidate).stem, tag=tag or Path(candidate).stem)
    res = run([cand, Artifact.of_file(reference, "reference"), data], settings, None).result
    res.candidate, res.reference = str(candidate), str(reference)
    return res


def settings_for(task: str, gates: Any, **kw: Any) -> Settings:
    return Settings(task=task, gates=gates.model_dump(mode="json") if gates is not None else {}, **kw)


def doctor(machine, target, hardware_compatibility: str = "none") -> list[tuple[str, str | None]]:
    """Where checks (and benches) run: the CPU families (they need ONNX Runtime's CPU provider; the
    others are optional) and the target's TensorRT engines on its GPU."""
    from optim.backends.engine_compat import build_blocker
    from optim.backends.registry import families, get_backend

    return [(f"on the CPU ({', '.join(families())})", get_backend(PRIMARY).blocker(machine)),
            (f"TensorRT engines on the GPU ({target.name})", build_blocker(machine, target, hardware_compatibility))]
