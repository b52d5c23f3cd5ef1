"""Stage: accuracy-aware quantization of a Q/DQ model, and the calibration study.

``tune_quantized``: rank the quantized nodes by sensitivity (``optim.qdq.edit.sensitivity``)
and, with a budget, take the fewest most sensitive ones back to high precision
(``optim.qdq.edit.budget``); writes the tuned model when a budget is set.
``calibration_study``: quantize with each calibration method and set size and
score each result against FP32, so the cost of the choice is visible.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optim.qdq.edit.budget import BudgetResult, apply_budget
from optim.console import info
from optim.onnx_tools import load_onnx, save_onnx
from optim.recipe import CalibrationStudySettings, QuantizeOptions, QuantizeSettings, TuningSettings
from optim.backends.base import run_batched
from optim.backends.onnxruntime import OrtRunner
from optim.qdq.edit.sensitivity import Evaluator, SensitivityReport, node_sensitivity


def reference_outputs(fp32: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    with OrtRunner(Path(fp32)) as r:
        return next(iter(run_batched(r, x, batch, "reference fp32").values()))


@dataclass
class TuneResult:
    tag: str
    samples: int
    sensitivity: SensitivityReport | None = None
    budget: BudgetResult | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def tune_quantized(fp32: Path, quantized: Path, x: np.ndarray, labels: np.ndarray | None,
                   s: TuningSettings, max_drop: float | None = None, out: Path | None = None,
                   tag: str = "") -> TuneResult:
    """Sensitivity ranking and (with ``max_drop``) the budget; the tuned model goes to ``out``."""
    t0 = time.perf_counter()
    model = load_onnx(quantized)
    ref = reference_outputs(fp32, x)
    n = min(s.sensitivity_samples, len(x))
    sub_labels = None if labels is None else labels[:n]
    res = TuneResult(tag or Path(quantized).stem, len(x))
    if s.sensitivity or max_drop is not None:
        res.sensitivity = node_sensitivity(model, Evaluator(x[:n], ref[:n], sub_labels, s.metric))
        info(f"  sensitivity of {len(res.sensitivity.rows)} nodes: {res.sensitivity.evaluations} "
             f"evaluations of {n} samples in {res.sensitivity.seconds:.1f} s")
    if max_drop is not None:
        ev = Evaluator(x, ref, labels, s.metric)
        tuned, res.budget = apply_budget(model, ev, max_drop, s.max_excluded, res.sensitivity)
        b = res.budget
        info(f"  budget {max_drop:g} pts ({b.metric}): drop {b.before.drop:.3f} -> {b.after.drop:.3f} "
             f"with {len(b.excluded)} node(s) in high precision; {b.evaluations} evaluations, "
             f"{b.seconds:.1f} s")
        if out is not None:
            save_onnx(tuned, out)
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


@dataclass
class StudyRow:
    method: str
    calibration_samples: int
    cosine: float
    top1_agreement: float
    top1: float | None
    drop: float
    quantize_seconds: float


@dataclass
class StudyResult:
    precision: str
    target: str
    metric: str
    samples: int
    rows: list[StudyRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def calibration_study(fp32: Path, calib: np.ndarray, x: np.ndarray, labels: np.ndarray | None,
                      s: CalibrationStudySettings, options: QuantizeOptions | None = None) -> StudyResult:
    from optim.stages.quantize import quantize_onnx

    ref = reference_outputs(fp32, x)
    ev = Evaluator(x, ref, labels)
    res = StudyResult(s.precision, s.target, ev.metric, len(x))
    base = (options or QuantizeOptions()).model_dump()
    with tempfile.TemporaryDirectory(prefix="optim-study-") as d:
        for method in s.methods:
            if method == "percentile" and s.target == "tensorrt":
                res.skipped.append("percentile: modelopt (target tensorrt) offers max and entropy only")
                continue
            for size in s.sizes:
                if size > len(calib):
                    res.skipped.append(f"{method} x {size}: only {len(calib)} calibration samples")
                    continue
                q = Path(d) / f"{method}-{size}.onnx"
                qs = QuantizeSettings(**{**base, "method": method}, precision=s.precision, target=s.target)
                rep = quantize_onnx(fp32, qs, q, calib[:size])
                f = ev.score(load_onnx(q))
                res.rows.append(StudyRow(method, size, f.cosine, f.top1_agreement, f.top1, f.drop,
                                         rep.seconds))
                info(f"  calibration {method} x {size}: drop {f.drop:.3f} pts ({ev.metric}), "
                     f"cosine {f.cosine:.5f}")
    return res
