"""Stage 3: compare a candidate with the FP32 reference on the same inputs.

Per output: max / mean absolute error, cosine similarity (per sample, then mean
and minimum), top-1 agreement for (N, classes) outputs. With labels: task top-1
and top-5 accuracy and their change vs FP32, in points. Gates turn these into a
pass/fail that the CLI and CI act on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optim.errors import DataError, GateError
from optim.recipe import CheckSettings, Gates
from optim.backends import open_runner, run_batched


def output_deltas(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    if ref.shape != got.shape:
        raise DataError(f"candidate output shape {list(got.shape)} != reference {list(ref.shape)}")
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    err = np.abs(r - g)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    cos = np.where(norms > 0, (r * g).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    out = {"max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()),
           "cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    if ref.ndim == 2 and ref.shape[1] > 1:
        out["top1_agreement"] = float(100.0 * (ref.argmax(1) == got.argmax(1)).mean())
        k = min(5, ref.shape[1])
        tr = np.argpartition(-ref, k - 1, axis=1)[:, :k]
        tg = np.argpartition(-got, k - 1, axis=1)[:, :k]
        overlap = [len(set(a) & set(b)) for a, b in zip(tr.tolist(), tg.tolist())]
        out["top5_overlap"] = float(100.0 * np.mean(overlap) / k)
        out["kl_divergence"] = _kl(r, g)
    return out


def _kl(ref_logits: np.ndarray, got_logits: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(got)), in nats."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lr, lg = log_softmax(ref_logits), log_softmax(got_logits)
    return float(max(0.0, (np.exp(lr) * (lr - lg)).sum(axis=1).mean()))


def topk_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if logits.ndim != 2:
        raise DataError(f"task accuracy needs (N, classes) outputs, got shape {list(logits.shape)}")
    n_cls = logits.shape[1]
    if labels.min() < 0 or labels.max() >= n_cls:
        raise DataError(f"labels range {labels.min()}..{labels.max()} does not fit {n_cls} classes")
    k = min(5, n_cls)
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return {"top1": float(100.0 * (logits.argmax(1) == labels).mean()),
            "top5": float(100.0 * (topk == labels[:, None]).any(axis=1).mean())}


@dataclass
class GateResult:
    gate: str
    value: float
    limit: float
    passed: bool

    def line(self, tag: str) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return f"gate {self.gate} {verdict} for {tag}: measured {self.value:.4g}, limit {self.limit:g}"


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

    def failures(self) -> list[str]:
        return [g.line(self.tag) for g in self.gates if not g.passed]


def apply_gates(result: CheckResult, gates: Gates) -> list[GateResult]:
    first = next(iter(result.outputs.values()))
    out: list[GateResult] = []
    if gates.max_top1_drop is not None:
        if result.accuracy is None:
            raise DataError("gate max_top1_drop needs labelled evaluation data; this data has no labels")
        drop = -result.accuracy["top1_delta"]
        out.append(GateResult("max_top1_drop", drop, gates.max_top1_drop, drop <= gates.max_top1_drop))
    if gates.min_cosine is not None:
        v = first["cosine"]
        out.append(GateResult("min_cosine", v, gates.min_cosine, v >= gates.min_cosine))
    if gates.min_top1_agreement is not None:
        if "top1_agreement" not in first:
            raise DataError("gate min_top1_agreement needs a (N, classes) output")
        v = first["top1_agreement"]
        out.append(GateResult("min_top1_agreement", v, gates.min_top1_agreement,
                              v >= gates.min_top1_agreement))
    if gates.max_abs_error is not None:
        v = max(o["max_abs_error"] for o in result.outputs.values())
        out.append(GateResult("max_abs_error", v, gates.max_abs_error, v <= gates.max_abs_error))
    return out


def run_model(path: Path, x: np.ndarray, s: CheckSettings, what: str) -> tuple[dict[str, np.ndarray], str]:
    with open_runner(path, threads=s.threads) as runner:
        outs = run_batched(runner, x, s.batch_size, description=what)
        return outs, runner.method


def check_candidate(candidate: Path, reference: Path, x: np.ndarray, labels: np.ndarray | None,
                    s: CheckSettings, gates: Gates, *, tag: str = "",
                    ref_outputs: tuple[dict[str, np.ndarray], str] | None = None,
                    data: str = "", candidate_x: np.ndarray | None = None) -> CheckResult:
    """Run both models on ``x`` and compare; ``ref_outputs`` reuses a reference run.

    ``candidate_x``: the candidate's own inputs when they differ from the reference's
    (raw uint8 frames for a model with fused preprocessing, ``x`` being those frames
    preprocessed on the host)."""
    tag = tag or Path(candidate).stem
    ref, ref_method = ref_outputs or run_model(reference, x, s, "reference fp32")
    got, method = run_model(candidate, x if candidate_x is None else candidate_x, s, f"check {tag}")
    missing = set(ref) - set(got)
    if missing:
        raise DataError(f"{candidate} lacks outputs {sorted(missing)} of the reference")
    outputs = {k: output_deltas(ref[k], got[k]) for k in ref}
    accuracy = None
    if labels is not None:
        first = next(iter(ref))
        a_ref, a_got = topk_accuracy(ref[first], labels), topk_accuracy(got[first], labels)
        accuracy = {**a_got, "reference_top1": a_ref["top1"], "reference_top5": a_ref["top5"],
                    "top1_delta": a_got["top1"] - a_ref["top1"],
                    "top5_delta": a_got["top5"] - a_ref["top5"]}
    result = CheckResult(tag, str(candidate), str(reference), len(x), method, ref_method, outputs,
                         accuracy, data=data)
    result.gates = apply_gates(result, gates)
    return result


def raise_on_failures(results: list[CheckResult]) -> None:
    lines = [line for r in results for line in r.failures()]
    if lines:
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        raise GateError(lines[0] + more)
