"""The accuracy-aware stages of ``optim run``: sensitivity, the budget, the calibration study.

A mixin of ``optim.pipeline.Pipeline`` (it uses its recipe, run folder and stage
cache). With a budget, the quantize stage writes ``model.<tag>-nobudget.onnx`` and
the tune stage writes the deployable ``model.<tag>.onnx`` from it; both are checked
and benchmarked, so the report shows the numbers with and without the budget.
Tuning runs on the tuning data (default: the calibration data), never on the
evaluation set that the report scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optim.artifacts import sha256_array, write_json
from optim.console import info
from optim.onnx_tools import load_onnx, quant_coverage
from optim.recipe import QuantizeSettings

NOBUDGET = "-nobudget"
FP32 = "model.fp32.onnx"


class TuningStages:
    """Needs the host's ``recipe``, ``rd``, ``_stage`` and ``versions``; ``_tuning`` caches data."""

    _tuning: tuple[np.ndarray, np.ndarray | None, str, str] | None = None

    def budgeted(self, qs: QuantizeSettings) -> bool:
        r = self.recipe
        return qs.tag in r.tuned_tags() and r.tuning.budget_for(qs.tag) is not None

    def raw_tag(self, qs: QuantizeSettings) -> str:
        """The quantize stage's tag: ``<tag>-nobudget`` when a budget will derive ``<tag>`` from it."""
        return qs.tag + NOBUDGET if self.budgeted(qs) else qs.tag

    def tuning_data(self) -> tuple[np.ndarray, np.ndarray | None, str, str]:
        if self._tuning is None:
            r = self.recipe
            spec = r.tuning.data or r.calibration.data
            x, y, ds, _ = self.prepare(spec, r.tuning.samples)
            desc = spec.description or ds.source
            info(f"tuning: {len(x)} samples from {ds.source}"
                 + (" (labelled)" if y is not None else " (no labels: top-1 agreement with FP32)"))
            self._tuning = (x, y, desc, sha256_array(x) + sha256_array(y))
        return self._tuning

    def tune(self, qs: QuantizeSettings, raw_sha: str, fp32_sha: str) -> str | None:
        """Sensitivity (+ budget) for one entry; the budgeted model's sha, or None without a budget."""
        from optim.stages.tune import tune_quantized

        s = self.recipe.tuning
        budget = self.budgeted(qs)
        x, y, desc, data_hash = self.tuning_data()
        raw_rel = f"model.{self.raw_tag(qs)}.onnx"
        json_rel = f"tune/{qs.tag}.json"
        rel = f"model.{qs.tag}.onnx" if budget else json_rel
        key = {"quantized": raw_sha, "reference": fp32_sha, "max_drop": s.budget_for(qs.tag),
               "settings": s.model_dump(mode="json", exclude={"precisions", "max_drop"}),
               "data": data_hash, "ort": self.versions.get("onnxruntime")}

        def make(path: Path) -> dict[str, Any]:
            info(f"tune {qs.tag}:")
            res = tune_quantized(self.rd.path(FP32), self.rd.path(raw_rel), x, y, s,
                                 max_drop=s.budget_for(qs.tag), out=path if budget else None, tag=qs.tag)
            coverage = quant_coverage(load_onnx(path)).as_dict() if budget else None
            write_json(self.rd.path(json_rel), {**res.as_dict(), "data": desc, "source": raw_rel,
                                                "output": rel if budget else None, "coverage": coverage})
            if budget:
                self.rd.record(f"tune/{qs.tag}", json_rel, "tune", parents=[qs.tag])
            kept = res.budget.excluded if res.budget else []
            return {**s.model_dump(mode="json"), "max_drop": s.budget_for(qs.tag),
                    "kept_in_high_precision": kept}

        sha = self._stage(qs.tag if budget else f"tune/{qs.tag}", rel, "tune", key, make,
                          parents=[self.raw_tag(qs), "fp32"])
        return sha if budget else None

    def study(self, fp32_sha: str, calib: np.ndarray | None, calib_hash: str | None,
              x: np.ndarray, labels: np.ndarray | None) -> None:
        from optim.stages.tune import calibration_study

        r = self.recipe
        s = r.calibration_study
        if s is None or calib is None:
            return
        xs = x[: s.samples] if s.samples else x
        ys = None if labels is None else labels[: len(xs)]
        key = {"fp32": fp32_sha, "calib": calib_hash, "eval": sha256_array(xs) + sha256_array(ys),
               "settings": s.model_dump(mode="json"), "options": r.quantize.model_dump(mode="json"),
               "tools": [self.versions.get(k) for k in ("nvidia-modelopt", "onnxruntime")]}

        def make(path: Path) -> dict[str, Any]:
            info(f"calibration study: {', '.join(s.methods)} x {list(s.sizes)} samples, "
                 f"{s.precision} for {s.target}, scored on {len(xs)} evaluation samples")
            res = calibration_study(self.rd.path(FP32), calib, xs, ys, s, r.quantize)
            write_json(path, res.as_dict())
            return s.model_dump(mode="json")

        self._stage("study/calibration", "study/calibration.json", "study", key, make, parents=["fp32"])
