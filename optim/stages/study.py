"""Stage: the calibration study. Quantize with each calibration method and set size and
score each result against FP32 on the tuning data, so the cost of the choice is visible."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optim.artifacts import Artifact, write_json
from optim.console import info
from optim.executor import StageContext, StageOutput
from optim.onnx_tools import load_onnx
from optim.stages.tune.sensitivity import Evaluator
from optim.settings import CalibrationStudySettings, QuantizeOptions, QuantizeSettings, Strict
from optim.stages.tune.stage import reference_outputs
from optim.tasks import get_task

NAME = "study"
SUMMARY = "calibration methods and sample counts, each scored against FP32"
TOOLS = ("nvidia-modelopt", "onnxruntime", "onnx")


class Settings(Strict):
    task: str = "classification"
    study: CalibrationStudySettings
    quantize: QuantizeOptions = QuantizeOptions()


def run(inputs: list[Artifact], settings: Settings, ctx: StageContext) -> StageOutput:
    """``inputs``: the FP32 model, the calibration ``Data``, the tuning ``Data`` it is scored on."""
    fp32, calib, data = inputs
    s = settings.study
    data = data.head(s.samples)
    info(f"calibration study: {', '.join(s.methods)} x {list(s.sizes)} samples, {s.precision} for "
         f"{s.target}, scored on {len(data.x)} tuning samples")
    res = calibration_study(fp32.path, calib.x, data.x, data.labels, s, settings.quantize, settings.task)
    write_json(ctx.out, {**res.as_dict(), "data": data.description})
    return StageOutput(s.model_dump(mode="json"), res)


@dataclass
class StudyRow:
    method: str
    calibration_samples: int
    cosine: float
    agreement: float
    score: float | None  # the task's labelled metric
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
                      s: CalibrationStudySettings, options: QuantizeOptions | None = None,
                      task: str = "classification") -> StudyResult:
    from optim.stages.quantize.stage import quantize_onnx

    ev = Evaluator(x, reference_outputs(fp32, x), labels, task=get_task(task))
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
                res.rows.append(StudyRow(method, size, f.cosine, f.agreement, f.score, f.drop,
                                         rep.seconds))
                info(f"  calibration {method} x {size}: drop {f.drop:.3f} pts ({ev.metric}), "
                     f"cosine {f.cosine:.5f}")
    return res



