"""The study stage: the calibration study (each calibration method and set size, scored against FP32)."""

from __future__ import annotations


def test_calibration_study_rows_and_skips(tiny_onnx, calib_x, eval_xy):
    from optim.settings import CalibrationStudySettings
    from optim.stages.study import calibration_study

    x, y = eval_xy
    res = calibration_study(tiny_onnx, calib_x, x, y, CalibrationStudySettings(
        methods=("max", "entropy", "percentile"), sizes=(16, 1000)))
    assert [(r.method, r.calibration_samples) for r in res.rows] == [("max", 16), ("entropy", 16)]
    assert any("percentile" in s for s in res.skipped) and any("1000" in s for s in res.skipped)
    assert res.metric == "top1" and all(0.9 < r.cosine <= 1.0 + 1e-9 for r in res.rows)
