"""Per-stage settings models of a recipe, validated by pydantic (unknown keys are errors).

Each stage has one typed settings object here; ``optim run`` reads them from a
recipe (``optim.recipe.Recipe``), the single-stage commands build the same objects
from their flags. This module must not import ``optim.recipe``: that one imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from optim.runfolder.entry import QUANTIZED, Entry

__all__ = [
    "BatchRange", "BenchSettings", "BuildSettings", "CalibMethod", "CalibrationSettings",
    "BenchSize", "CalibrationStudySettings", "Candidate", "CheckSettings", "DataSpec", "EvaluationSettings",
    "ExportSettings", "FusedPreprocessSettings", "InputSpec", "ModelSpec", "NmsSettings", "PRECISIONS",
    "Int8Scheme", "OrtInt8", "Precision", "Preprocess", "QUANTIZED", "QuantizeOptions", "QuantizeSettings", "Strict",
    "Target", "TuningSettings",
]

Precision = Literal["fp32", "int8", "fp8", "fp16", "bf16"]
Target = Literal["tensorrt", "onnxruntime"]
CalibMethod = Literal["max", "entropy", "percentile"]
#: ONNX Runtime INT8 formats: activations x weights ("_7bit": weights in 7 bits, ORT's reduce_range)
OrtInt8 = Literal["auto", "u8s8", "u8s8_7bit", "u8u8", "s8s8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp8", "fp16", "bf16")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(Strict):
    """Where images (and optionally labels) come from.

    kinds: ``npz`` (arrays ``images_key`` / ``labels_key``), ``npy`` (images, plus an
    optional labels ``.npy``), ``idx`` (MNIST-style files), ``folder`` (one sub-folder
    per class), ``synthetic`` (seeded random inputs, no labels: timing only), ``photos``
    (``count`` natural photos from scikit-image and seeded variants of them, no labels).
    Detection: ``scenes`` (``count`` Fashion-MNIST scenes of ``split`` made here from
    ``seed``, at the model's input size, with their boxes), ``coco`` (an image folder
    ``path`` and a COCO ``annotations`` JSON; images letterboxed to the model's input
    size, boxes moved with them); an ``npz`` with ``boxes``, ``classes`` and
    ``image_index`` arrays (``optim.data.scenes.write_split``) has box labels too.
    uint8 arrays are raw images and go through preprocessing; float arrays must
    already have the model's input shape.
    """

    kind: Literal["npz", "npy", "idx", "folder", "synthetic", "photos", "scenes", "coco"]
    path: Path | None = None
    labels: Path | None = None
    annotations: Path | None = None
    split: Literal["train", "eval"] = "eval"
    images_key: str = "images"
    labels_key: str = "labels"
    count: int | None = Field(default=None, ge=1)
    seed: int = 0
    description: str = ""

    @model_validator(mode="after")
    def _needs_path(self) -> DataSpec:
        if self.kind not in ("synthetic", "photos", "scenes") and self.path is None:
            raise ValueError(f"data of kind '{self.kind}' needs a 'path'")
        if self.kind in ("synthetic", "photos", "scenes") and self.count is None:
            raise ValueError(f"{self.kind} data needs a 'count'")
        if self.kind == "coco" and self.annotations is None:
            raise ValueError("coco data needs 'annotations' (a COCO JSON file) besides the image folder 'path'")
        return self

    def resolved(self, base: Path) -> DataSpec:
        upd: dict[str, Any] = {}
        for key in ("path", "labels", "annotations"):
            p = getattr(self, key)
            if p is not None and not p.is_absolute():
                upd[key] = (base / p).resolve()
        return self.model_copy(update=upd)


class BatchRange(Strict):
    min: int = Field(default=1, ge=1)
    opt: int = Field(default=1, ge=1)
    max: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> BatchRange:
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"batch range needs min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self


class InputSpec(Strict):
    name: str = "input"
    shape: tuple[int, ...] = Field(description="per-sample shape, without the batch axis")
    dtype: Literal["float32"] = "float32"
    batch: BatchRange = BatchRange()

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(d < 1 for d in v):
            raise ValueError(f"input shape must be positive sizes, got {list(v)}")
        return v


class Preprocess(Strict):
    """How raw uint8 images become the model's input."""

    color: Literal["gray", "rgb", "bgr"] = "rgb"
    resize: int | None = Field(default=None, ge=1, description="shorter side, bilinear")
    crop: int | None = Field(default=None, ge=1, description="centre square crop")
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v


class ModelSpec(Strict):
    source: str = Field(description="torchvision:NAME, package.module:factory, or bundled:NAME")
    weights: Path | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ExportSettings(Strict):
    opset: int = Field(default=17, ge=17, le=21)
    output_names: tuple[str, ...] = ("output",)
    simplify: bool = True
    verify_batches: tuple[int, ...] = (1, 4)
    atol: float = 1e-4
    rtol: float = 1e-3
    seed: int = 0


class QuantizeOptions(Strict):
    """Quantization options shared by every precision of a recipe (its ``quantize`` key)."""

    method: CalibMethod = "entropy"
    percentile: float = Field(default=99.999, gt=0, le=100)
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    high_precision: Literal["fp32", "fp16"] = "fp32"
    ort_int8: OrtInt8 = Field(
        default="auto", description="INT8 format of onnxruntime-target files: auto picks the one this CPU's "
                                    "integer kernels compute exactly (see optim.stages.quantize.scheme)")
    keep_head: bool | None = Field(
        default=None, description="keep the output head's decode (detection: DFL, sigmoid, box arithmetic, "
                                  "final Concat) unquantized; default: the task's choice (detection: yes)")


class Int8Scheme(Strict):
    """The integer format of an ``onnxruntime``-target INT8 file, as chosen for a CPU class
    (``optim.stages.quantize.scheme``). Part of the quantize settings, so of the file's cache key."""

    format: Literal["u8s8", "u8s8_7bit", "u8u8", "s8s8"]
    cpu_class: str = Field(description="the CPU class that decided it (the features that change the file)")
    reason: str = ""

    @property
    def activations(self) -> str:
        return "int8" if self.format == "s8s8" else "uint8"

    @property
    def weights(self) -> str:
        return "uint8" if self.format == "u8u8" else "int8"

    @property
    def reduce_range(self) -> bool:
        return self.format == "u8s8_7bit"

    def label(self) -> str:
        """"uint8 activations x int8 weights (7-bit)"."""
        return f"{self.activations} activations x {self.weights} weights" + (" (7-bit)" if self.reduce_range else "")


class QuantizeSettings(QuantizeOptions):
    """One quantization or conversion of the FP32 model."""

    precision: Precision
    target: Target = "tensorrt"
    #: the INT8 format of an onnxruntime-target file, resolved for this CPU (None for the others)
    int8_scheme: Int8Scheme | None = None

    @property
    def tag(self) -> str:
        """The entry's tag (``Entry.of``): ``int8-tensorrt``, ``fp8-tensorrt``, ``fp16``, ..."""
        return Entry.of(self).tag


class CheckSettings(Strict):
    """How ``optim check`` runs the models (the ``check`` key).

    The accuracy gates are not here: they are the recipe's top-level ``gates`` key.
    """

    batch_size: int = Field(default=256, ge=1)
    threads: int | None = Field(default=None, ge=1)
    strict: bool = Field(default=False, description="a check flagged NOT MEANINGFUL (its reference cannot tell a "
                         "good candidate from a bad one) fails the run with exit 3, as a failed gate does")


class NmsSettings(Strict):
    """Decode + class-aware NMS in the graph of every entry of a detection recipe (its ``nms`` key)."""

    max_det: int = Field(default=100, ge=1, le=3840, description="boxes kept per image (TensorRT TopK: <= 3840)")
    conf: float = Field(default=0.25, ge=0.0, lt=1.0, description="keep boxes whose class score is above this")
    iou: float = Field(default=0.7, ge=0.0, le=1.0, description="class-aware NMS IoU threshold")
    form: Literal["ops", "nms_op"] = Field(
        default="ops", description="ops: greedy NMS from elementary ops (ONNX Runtime, TensorRT, TensorRT-RTX); "
        "nms_op: the ONNX NonMaxSuppression op (not buildable by TensorRT-RTX)")
    max_candidates: int = Field(default=1024, ge=1, le=3840, description="form ops: the best boxes above conf "
                                "that enter NMS, per image (TensorRT TopK: <= 3840)")


class BenchSize(Strict):
    """One more input size to time every entry at (a ``bench.sizes`` item; a bare number is ``size``)."""

    size: int | tuple[int, int] = Field(description="square side, or [height, width], in pixels")
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = Field(default=1, ge=0)
    iterations: int = Field(default=5, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, v: Any) -> Any:
        return {"size": v} if isinstance(v, (int, list, tuple)) else v

    @field_validator("size")
    @classmethod
    def _positive(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        if min((v,) if isinstance(v, int) else v) < 1:
            raise ValueError(f"sizes must be positive pixels, got {v}")
        return v

    @property
    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)

    @property
    def label(self) -> str:
        h, w = self.hw
        return str(h) if h == w else f"{h}x{w}"


class BenchSettings(Strict):
    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = Field(default=5, ge=0)
    iterations: int = Field(default=30, ge=1)
    threads: int | None = Field(default=None, ge=1)
    cuda_graph: bool = Field(default=False, description="GPU bench of engines: replay a captured CUDA graph")
    sizes: tuple[BenchSize, ...] = Field(
        default=(), description="more input sizes to time each entry at (fully convolutional models from a "
                                "PyTorch source: re-exported there, each precision's file carried over)")

    def at_recipe_size(self) -> BenchSettings:
        """These settings for the recipe's own input size (the other sizes are timed on their own)."""
        return self.model_copy(update={"sizes": ()})

    def at_size(self, size: BenchSize) -> BenchSettings:
        """These settings for one extra size: its batches and iterations, no further sizes."""
        return self.at_recipe_size().model_copy(update={"batch_sizes": size.batch_sizes, "warmup": size.warmup,
                                                        "iterations": size.iterations})


class BuildSettings(Strict):
    """TensorRT engine build for the recipe's ``target_gpu`` and its ``extra_targets`` (the ``build`` key).

    The ``target_gpu`` (H100) build runs only where TensorRT and a GPU are; elsewhere ``optim run``
    says why and skips it. ``extra_targets`` (TensorRT-RTX) build on any machine where their
    builder is installed.
    Q/DQ (INT8/FP8) and AutoCast (FP16/BF16) models build as strongly typed networks:
    their ONNX types decide the precision and no precision builder flag is set.
    """

    precisions: tuple[str, ...] | None = Field(
        default=None, description="entries to build (tags); default: those placed for TensorRT and fp32/fp16/bf16")
    fp16_bf16: Literal["strongly_typed", "builder_flags"] = Field(
        default="strongly_typed",
        description="fp16/bf16 engines from the AutoCast ONNX (strongly typed), or from the FP32 ONNX with the "
                    "FP16/BF16 builder flag (weakly typed; deprecated since TensorRT 10.12)")
    tf32: bool = Field(default=False, description="let FP32 layers use TF32 tensor cores (TensorRT's own default is on)")
    optimization_level: int = Field(default=3, ge=0, le=5, description="builder optimization level (TensorRT default 3)")
    workspace_mib: int | None = Field(default=None, ge=1, description="workspace pool limit; default: TensorRT's")
    hardware_compatibility: Literal["none", "ampere_plus"] = Field(
        default="none", description="none: runs on the target GPU's architecture only; ampere_plus: any sm_80+")
    version_compatible: bool = Field(default=False, description="engines later TensorRT versions can load")
    plugins: tuple[Path, ...] = Field(default=(), description="plugin libraries loaded before parsing")
    timing_cache: bool = Field(default=True, description="keep timing.cache in the run folder and reuse it")
    extra_targets: tuple[Literal["rtx"], ...] = Field(
        default=("rtx",),
        description="engine targets built besides target_gpu whose builder needs no GPU: rtx = TensorRT-RTX engines "
                    "for RTX/workstation GPUs (sm86/89/120), built wherever tensorrt-rtx is installed; [] for none")


class CalibrationSettings(Strict):
    data: DataSpec
    samples: int = Field(default=256, ge=1)


class EvaluationSettings(Strict):
    data: DataSpec
    samples: int | None = Field(default=None, ge=1, description="first N; all when unset")


class TuningSettings(Strict):
    """Accuracy-aware quantization (the ``tuning`` key): per-node sensitivity and a budget.

    Runs on a tuning set (default: the calibration data, never the evaluation set,
    so the evaluation numbers stay honest) for every INT8/FP8 entry of ``precisions``, whichever
    backend it is placed for; each variant is scored on every CPU backend the run reports.
    """

    data: DataSpec | None = None
    samples: int | None = Field(default=1024, ge=1, description="tuning samples for the budget")
    sensitivity: bool = True
    sensitivity_samples: int = Field(default=256, ge=1, description="samples per sensitivity evaluation")
    max_drop: float | dict[str, float] | None = Field(
        default=None, description="budget in points vs FP32 (one number, or per precision/tag); none: no budget")
    metric: str = Field(default="auto", description="auto, or one of the task's budget metrics")
    max_excluded: int | None = Field(default=None, ge=0)
    precisions: tuple[Literal["int8", "fp8"], ...] = ("int8", "fp8")

    @field_validator("max_drop")
    @classmethod
    def _nonnegative(cls, v: float | dict[str, float] | None) -> float | dict[str, float] | None:
        values = v.values() if isinstance(v, dict) else [] if v is None else [v]
        if any(x < 0 for x in values):
            raise ValueError("max_drop must be >= 0 points")
        return v

    def budget_for(self, tag: str) -> float | None:
        """``max_drop`` for one entry: its tag's value, else its precision's."""
        if not isinstance(self.max_drop, dict):
            return self.max_drop
        return self.max_drop.get(tag, self.max_drop.get(Entry.parse(tag).precision))


class CalibrationStudySettings(Strict):
    """Compare calibration methods and set sizes (the ``calibration_study`` key)."""

    methods: tuple[CalibMethod, ...] = ("max", "entropy")
    sizes: tuple[int, ...] = (64, 512)
    precision: Literal["int8", "fp8"] = "int8"
    target: Target = "tensorrt"
    samples: int | None = Field(default=None, ge=1, description="evaluation samples; default: all")


class FusedPreprocessSettings(Strict):
    """Fuse input preprocessing into the models (the ``fused_preprocess`` key).

    Every model of the run then takes raw uint8 NHWC frames of ``frame`` (H, W) through
    the csrc/ OptimPreprocess op, which applies the recipe's ``preprocess`` scale,
    mean and std and resizes (bilinear) to the input size; crop and resize of
    ``preprocess`` do not apply. Calibration, tuning and the FP32 reference get the
    same frames preprocessed on the host by the op's arithmetic.
    """

    frame: tuple[int, int]
    channel_order: Literal["RGB", "BGR"] = "RGB"
    out_dtype: Literal["float32", "float16"] = "float32"

    @field_validator("frame")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError(f"frame must be a positive [H, W], got {list(v)}")
        return v


class Candidate(Strict):
    precision: Precision
    target: Target = "tensorrt"
