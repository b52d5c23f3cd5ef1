"""Stage: put the OptimPreprocess op (csrc/) in front of a model, which then takes raw
uint8 NHWC frames of a fixed size and preprocesses them itself."""

from __future__ import annotations

from dataclasses import asdict

from optim.artifacts import Artifact
from optim.executor import StageContext, StageOutput
from optim.onnx_tools import load_onnx, save_onnx
from optim.settings import Strict

NAME = "fuse"
SUMMARY = "the preprocessing op (csrc/) in front of the model"
TOOLS = ("onnx",)


class Settings(Strict):
    op: dict  # the fields of optim.ops.preprocess.PreprocessOp
    frame: tuple[int, int]

    @classmethod
    def of(cls, op, frame: tuple[int, int]) -> Settings:
        return cls(op=asdict(op), frame=tuple(frame))


def run(inputs: list[Artifact], settings: Settings, ctx: StageContext) -> StageOutput:
    """``inputs``: the model. Writes the fused model to ``ctx.out``."""
    from optim.ops.preprocess import PreprocessOp, prepend

    (model,) = inputs
    op = PreprocessOp(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.op.items()})
    save_onnx(prepend(load_onnx(model.path), op, settings.frame), ctx.out)
    return StageOutput({"op": op.attributes(), "frame": list(settings.frame)})
