"""Recipes: one YAML per model, validated by pydantic (unknown keys are errors).

Each stage has one typed settings object here; ``optim run`` reads them from a
recipe, the single-stage commands build the same objects from their flags.
Relative paths in a recipe are relative to the recipe file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optim.errors import RecipeError

Precision = Literal["fp32", "int8", "fp8", "fp16", "bf16"]
Target = Literal["tensorrt", "onnxruntime"]
CalibMethod = Literal["max", "entropy", "percentile"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp8", "fp16", "bf16")
QUANTIZED = ("int8", "fp8")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(Strict):
    """Where images (and optionally labels) come from.

    kinds: ``npz`` (arrays ``images_key`` / ``labels_key``), ``npy`` (images, plus an
    optional labels ``.npy``), ``idx`` (MNIST-style files), ``folder`` (one sub-folder
    per class), ``synthetic`` (seeded random inputs, no labels: timing only), ``photos``
    (``count`` natural photos from scikit-image and seeded variants of them, no labels).
    uint8 arrays are raw images and go through preprocessing; float arrays must
    already have the model's input shape.
    """

    kind: Literal["npz", "npy", "idx", "folder", "synthetic", "photos"]
    path: Path | None = None
    labels: Path | None = None
    images_key: str = "images"
    labels_key: str = "labels"
    count: int | None = Field(default=None, ge=1)
    seed: int = 0
    description: str = ""

    @model_validator(mode="after")
    def _needs_path(self) -> DataSpec:
        if self.kind not in ("synthetic", "photos") and self.path is None:
            raise ValueError(f"data of kind '{self.kind}' needs a 'path'")
        if self.kind in ("synthetic", "photos") and self.count is None:
            raise ValueError(f"{self.kind} data needs a 'count'")
        return self

    def resolved(self, base: Path) -> DataSpec:
        upd: dict[str, Any] = {}
        for key in ("path", "labels"):
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


class QuantizeSettings(QuantizeOptions):
    """One quantization or conversion of the FP32 model."""

    precision: Precision
    target: Target = "tensorrt"

    @property
    def tag(self) -> str:
        return f"{self.precision}-{self.target}" if self.precision in QUANTIZED else self.precision


class Gates(Strict):
    max_top1_drop: float | None = Field(default=None, description="task top-1 loss, in points")
    min_cosine: float | None = None
    min_top1_agreement: float | None = Field(default=None, description="percent of samples")
    max_abs_error: float | None = None


class CheckSettings(Strict):
    batch_size: int = Field(default=256, ge=1)
    threads: int | None = Field(default=None, ge=1)
    gates: Gates = Gates()


class BenchSettings(Strict):
    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = Field(default=5, ge=0)
    iterations: int = Field(default=30, ge=1)
    threads: int | None = Field(default=None, ge=1)
    cuda_graph: bool = Field(default=False, description="GPU bench of engines: replay a captured CUDA graph")


class BuildSettings(Strict):
    """TensorRT engine build for the recipe's ``target_gpu`` (the ``build`` key).

    Runs only where TensorRT and a GPU are; elsewhere ``optim run`` says why and skips it.
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


class CalibrationSettings(Strict):
    data: DataSpec
    samples: int = Field(default=256, ge=1)


class EvaluationSettings(Strict):
    data: DataSpec
    samples: int | None = Field(default=None, ge=1, description="first N; all when unset")


class TuningSettings(Strict):
    """Accuracy-aware quantization (the ``tuning`` key): per-node sensitivity and a budget.

    Runs on a tuning set (default: the calibration data, never the evaluation set,
    so the evaluation numbers stay honest) for the entries placed for TensorRT.
    """

    data: DataSpec | None = None
    samples: int | None = Field(default=1024, ge=1, description="tuning samples for the budget")
    sensitivity: bool = True
    sensitivity_samples: int = Field(default=256, ge=1, description="samples per sensitivity evaluation")
    max_drop: float | dict[str, float] | None = Field(
        default=None, description="budget in points vs FP32 (one number, or per precision/tag); none: no budget")
    metric: Literal["auto", "top1", "agreement"] = "auto"
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
        if not isinstance(self.max_drop, dict):
            return self.max_drop
        return self.max_drop.get(tag, self.max_drop.get(tag.split("-")[0]))


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


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    task: Literal["classification"] = "classification"
    target_gpu: Literal["h100"] = "h100"
    model: ModelSpec
    input: InputSpec
    preprocess: Preprocess = Preprocess()
    export: ExportSettings = ExportSettings()
    calibration: CalibrationSettings
    evaluation: EvaluationSettings
    precisions: tuple[Candidate, ...]
    quantize: QuantizeOptions = QuantizeOptions()
    check: CheckSettings = CheckSettings()
    gates: dict[str, Gates] = Field(default_factory=dict, description="per precision tag, or 'default'")
    bench: BenchSettings = BenchSettings()
    build: BuildSettings = BuildSettings()
    tuning: TuningSettings | None = None
    calibration_study: CalibrationStudySettings | None = None
    fused_preprocess: FusedPreprocessSettings | None = None

    @field_validator("precisions", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"precision": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _checks(self) -> Recipe:
        tags = [self.settings_for(c).tag for c in self.precisions]
        if "fp32" not in tags:
            raise ValueError("precisions must include fp32 (the reference)")
        if len(set(tags)) != len(tags):
            raise ValueError(f"precisions repeat an entry: {tags}")
        for key in self.gates:
            if key != "default" and key not in tags and key not in PRECISIONS:
                raise ValueError(f"gates names '{key}', which is not a precision of this recipe {tags}")
        if self.fused_preprocess is not None:
            c = self.input.shape[0]
            if len(self.input.shape) != 3 or c not in (1, 3):
                raise ValueError(f"fused_preprocess needs a (C, H, W) input with C 1 or 3, got {list(self.input.shape)}")
            if len(self.preprocess.mean) not in (1, c) or len(self.preprocess.std) not in (1, c):
                raise ValueError(f"fused_preprocess needs 1 or {c} preprocess mean/std values")
        if self.tuning is not None and not self.tuned_tags():
            raise ValueError(f"tuning applies to {list(self.tuning.precisions)} entries placed for "
                             f"tensorrt; this recipe has none of them {tags}")
        unknown = sorted(set(self.build.precisions or ()) - set(tags))
        if unknown:
            raise ValueError(f"build.precisions names {unknown}, not precisions of this recipe {tags}")
        return self

    def build_tags(self) -> list[str]:
        """The entries that get a TensorRT engine (``build.precisions``, else every one made for TensorRT)."""
        tags = [self.settings_for(c).tag for c in self.precisions]
        if self.build.precisions is not None:
            return [t for t in tags if t in self.build.precisions]
        return [t for t, c in zip(tags, self.precisions) if c.precision not in QUANTIZED or c.target == "tensorrt"]

    def preprocess_op(self):
        """The fused preprocessing op of this recipe (``optim.ops.preprocess.PreprocessOp``), or None."""
        f = self.fused_preprocess
        if f is None:
            return None
        from optim.ops.preprocess import PreprocessOp

        c, h, w = self.input.shape
        pp = self.preprocess
        return PreprocessOp(out_h=h, out_w=w, scale=pp.scale, mean=tuple(pp.mean), std=tuple(pp.std),
                            channel_order=f.channel_order, out_dtype=f.out_dtype)

    def tuned_tags(self) -> list[str]:
        """Entries that get sensitivity analysis and the budget (TensorRT placement only)."""
        if self.tuning is None:
            return []
        return [self.settings_for(c).tag for c in self.precisions
                if c.precision in self.tuning.precisions and c.target == "tensorrt"]

    def settings_for(self, c: Candidate) -> QuantizeSettings:
        return QuantizeSettings(**self.quantize.model_dump(), precision=c.precision, target=c.target)

    def gates_for(self, tag: str) -> Gates:
        precision = tag.split("-")[0]
        merged = self.gates.get("default", Gates()).model_dump()
        for key in (precision, tag):
            if key in self.gates:
                merged.update({k: v for k, v in self.gates[key].model_dump().items() if v is not None})
        return Gates(**merged)


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{err['loc'][-1]}' at {loc}"
    if err["type"] == "missing":
        return f"missing key {loc}"
    return f"{loc}: {err['msg']}"


def validation_message(where: str, exc: ValidationError) -> str:
    errors = exc.errors()
    msg = "; ".join(_format_error(e) for e in errors[:3])
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{where}: {msg}{more}"


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise RecipeError(f"file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file") from None


def load_data_spec(value: Any, base: Path, where: str) -> DataSpec:
    """A data spec given inline, or as the path of a YAML spec file (e.g. under calib/)."""
    if isinstance(value, str):
        spec_path = (base / value).resolve()
        if not spec_path.is_file():
            raise RecipeError(f"{where}: data spec file not found: {spec_path}")
        content = _read_yaml(spec_path)
        if not isinstance(content, dict):
            raise RecipeError(f"{spec_path}: a data spec must be a YAML mapping (kind, path, ...)")
        return load_data_spec(content, spec_path.parent, str(spec_path))
    try:
        return DataSpec.model_validate(value).resolved(base)
    except ValidationError as exc:
        raise RecipeError(validation_message(where, exc)) from None


def load_recipe(path: Path) -> Recipe:
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of keys to values")
    base = path.resolve().parent
    for section in ("calibration", "evaluation", "tuning"):
        sec = raw.get(section)
        if isinstance(sec, dict) and "data" in sec:
            sec["data"] = load_data_spec(sec["data"], base, f"{path} ({section}.data)")
    build = raw.get("build")
    if isinstance(build, dict) and isinstance(build.get("plugins"), list):
        build["plugins"] = [(base / p).resolve() if isinstance(p, str) and not Path(p).is_absolute() else p
                            for p in build["plugins"]]
    model = raw.get("model")
    if isinstance(model, dict) and model.get("weights"):
        w = Path(model["weights"])
        model["weights"] = w if w.is_absolute() else (base / w).resolve()
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(validation_message(str(path), exc)) from None
