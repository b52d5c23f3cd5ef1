"""Recipes: one YAML per model, validated by pydantic (unknown keys are errors).

Each stage has one typed settings object (in ``optim.settings``, re-exported here);
``optim run`` reads them from a recipe, the single-stage commands build the same
objects from their flags. Relative paths in a recipe are relative to the recipe file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from optim.errors import InputError, RecipeError
from optim.runfolder.entry import Entry
from optim.tasks import get_task, task_names
from optim.settings import (  # noqa: F401  (re-exported: modules import these from optim.recipe)
    PRECISIONS, QUANTIZED, BatchRange, BenchSettings, BenchSize, BuildSettings, CalibMethod, CalibrationSettings,
    CalibrationStudySettings, Candidate, CheckSettings, DataSpec, EvaluationSettings, ExportSettings,
    FusedPreprocessSettings, InputSpec, Int8Scheme, ModelSpec, NmsSettings, OrtInt8, Precision, Preprocess,
    QuantizeOptions, QuantizeSettings, Strict, Target, TuningSettings,
)

__all__ = [
    "BatchRange", "BenchSettings", "BenchSize", "BuildSettings", "CalibMethod", "CalibrationSettings",
    "CalibrationStudySettings", "Candidate", "CheckSettings", "DataSpec", "EvaluationSettings",
    "ExportSettings", "FusedPreprocessSettings", "InputSpec", "Int8Scheme", "ModelSpec", "NmsSettings", "OrtInt8",
    "PRECISIONS", "Precision", "Preprocess", "QUANTIZED", "QuantizeOptions", "QuantizeSettings",
    "Recipe", "RecipeError", "Strict", "Target", "TuningSettings", "apply_overrides",
    "load_data_spec", "load_recipe", "validation_message",
]


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    task: str = Field(default="classification", description="a registered task (optim.tasks)")
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
    gates: dict[str, Any] = Field(default_factory=dict,
                                  description="per precision tag, or 'default': the task's gates model")
    bench: BenchSettings = BenchSettings()
    backends: tuple[str, ...] | None = Field(
        default=None, description="CPU backends every entry is checked and timed on (onnxruntime, openvino); "
                                  "default: every one installed here")
    build: BuildSettings = BuildSettings()
    tuning: TuningSettings | None = None
    calibration_study: CalibrationStudySettings | None = None
    fused_preprocess: FusedPreprocessSettings | None = None
    nms: NmsSettings | None = Field(default=None, description="detection: also write each entry with decode + "
                                    "NMS in the graph (model.<tag>.nms.onnx)")

    @field_validator("precisions", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"precision": x} if isinstance(x, str) else x for x in v]
        return v

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in task_names():
            raise ValueError(f"unknown task '{v}'; known: {', '.join(task_names())}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _task_gates(cls, raw: Any) -> Any:
        """Each ``gates`` entry becomes the task's gates model (the task decides which gates exist)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("gates"), dict):
            return raw
        task = raw.get("task", "classification")
        if task not in task_names():
            return raw  # the task field reports it
        model = get_task(task).gates_model
        gates, errors = {}, []
        for key, value in raw["gates"].items():
            try:
                gates[key] = value if isinstance(value, model) else model.model_validate(value)
            except ValidationError as exc:
                errors += [{**{k: e[k] for k in ("type", "input", "ctx") if k in e}, "loc": ("gates", key, *e["loc"])}
                           for e in exc.errors()]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return {**raw, "gates": gates}

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
        if self.nms is not None and self.task != "detection":
            raise ValueError(f"nms applies to task detection, not {self.task}")
        if self.nms is not None and self.fused_preprocess is not None:
            raise ValueError("nms and fused_preprocess together are not supported: choose one")
        metrics = get_task(self.task).budget_metrics
        if self.tuning is not None and self.tuning.metric not in ("auto", *metrics):
            raise ValueError(f"tuning.metric '{self.tuning.metric}' is not a budget metric of task {self.task}: "
                             f"use auto, {', '.join(metrics)}")
        if self.tuning is not None and not self.tuned_tags():
            raise ValueError(f"tuning applies to {list(self.tuning.precisions)} entries; "
                             f"this recipe has none of them {tags}")
        from optim.backends.cpu import families

        bad = [b for b in self.backends or () if b not in families()]
        if bad or (self.backends is not None and not self.backends):
            raise ValueError(f"backends names {bad or 'nothing'}; CPU backends are {', '.join(families())}")
        unknown = sorted(set(self.build.precisions or ()) - set(tags))
        if unknown:
            raise ValueError(f"build.precisions names {unknown}, not precisions of this recipe {tags}")
        ort = sorted(t for t in self.build.precisions or () if Entry.parse(t).cpu_placed)
        if ort:
            raise ValueError(f"build.precisions names {ort}, placed for ONNX Runtime on CPU: TensorRT's parser refuses "
                             "their int32-bias Q/DQ; list the entry placed for TensorRT (target: tensorrt) instead")
        return self

    def build_tags(self) -> list[str]:
        """The entries that get a TensorRT engine (``build.precisions``, else every one made for TensorRT)."""
        tags = [self.settings_for(c).tag for c in self.precisions]
        if self.build.precisions is not None:
            return [t for t in tags if t in self.build.precisions]
        return [t for t in tags if not Entry.parse(t).cpu_placed]

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
        """Entries that get sensitivity analysis and the budget (every INT8/FP8 entry of ``tuning.precisions``,
        whichever backend it is placed for)."""
        if self.tuning is None:
            return []
        return [self.settings_for(c).tag for c in self.precisions if c.precision in self.tuning.precisions]

    def settings_for(self, c: Candidate) -> QuantizeSettings:
        return QuantizeSettings(**self.quantize.model_dump(), precision=c.precision, target=c.target)

    def gates_for(self, tag: str) -> BaseModel:
        """The task's gates for one entry: the task's defaults, then 'default', its precision, its tag."""
        task = get_task(self.task)
        model = task.gates_model
        merged: dict[str, Any] = dict(task.default_gates)
        for key in ("default", Entry.parse(tag).precision, tag):
            if key in self.gates:
                merged.update({k: v for k, v in self.gates[key].model_dump().items() if v is not None})
        return model(**merged)


def apply_overrides(r: Recipe, *, weights: Path | None = None, eval_samples: int | None = None,
                    calib_samples: int | None = None, precisions: str | None = None,
                    bench_iterations: int | None = None, strict: bool = False) -> Recipe:
    """The recipe with ``optim run``'s command-line overrides applied (``r`` itself when none is given).

    ``precisions`` is comma-separated; each name is a tag (``int8-tensorrt``, ``fp16``) or a
    precision (``int8``: every int8 entry of the recipe). fp32, the reference, is always kept.
    ``strict`` sets ``check.strict`` (a check flagged NOT MEANINGFUL fails the run).
    """
    upd: dict[str, Any] = {}
    if weights is not None:
        upd["model"] = r.model.model_copy(update={"weights": Path(weights).resolve()})
    if eval_samples is not None:
        upd["evaluation"] = r.evaluation.model_copy(update={"samples": eval_samples})
    if calib_samples is not None:
        upd["calibration"] = r.calibration.model_copy(update={"samples": calib_samples})
    if bench_iterations is not None:
        upd["bench"] = r.bench.model_copy(update={"iterations": bench_iterations})
    if precisions is not None:
        upd["precisions"] = _select_precisions(r, precisions)
    if strict:
        upd["check"] = r.check.model_copy(update={"strict": True})
    return r.model_copy(update=upd) if upd else r


def _select_precisions(r: Recipe, text: str) -> tuple[Candidate, ...]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    tags = [r.settings_for(c).tag for c in r.precisions]
    present = list(dict.fromkeys(c.precision for c in r.precisions))
    unknown = [n for n in dict.fromkeys(names) if n not in tags and n not in present]
    if unknown:
        raise InputError(f"--precisions names {', '.join(repr(n) for n in unknown)}, which match no entry of "
                         f"recipe '{r.name}': use its tags ({', '.join(tags)}) or precisions ({', '.join(present)})")
    wanted = set(names) | {"fp32"}
    return tuple(c for c, tag in zip(r.precisions, tags) if tag in wanted or c.precision in wanted)


#: extra words for unknown keys that users put in the wrong place
_KEY_HINTS = {
    ("check", "gates"): "gates go under the top-level 'gates:' key, per precision or 'default'",
}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = _KEY_HINTS.get(tuple(str(p) for p in err["loc"]))
        return f"unknown key '{err['loc'][-1]}' at {loc} ({hint or 'value ' + _short(err.get('input'))})"
    if err["type"] == "missing":
        return f"missing key {loc}"
    got = ""
    if "input" in err and not isinstance(err["input"], dict):  # a dict: a whole section, already described
        shown = _short(err["input"])
        if shown not in err["msg"]:
            got = f" (got {shown})"
    return f"{loc}: {err['msg']}{got}"


def _error_rank(err: dict[str, Any]) -> int:
    """Unknown keys first, then bad values, then missing keys (often a consequence of a misspelt key)."""
    return {"extra_forbidden": 0, "missing": 2}.get(err["type"], 1)


def validation_message(where: str, exc: ValidationError) -> str:
    errors = sorted(exc.errors(), key=_error_rank)
    msg = "; ".join(_format_error(e) for e in errors[:3])
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{where}: {msg}{more}"


#: bounds on a YAML file before anything expands it: its size, its aliases (``*name``), and the
#: number of values it stands for with every alias expanded (an "alias bomb" is small on disk only)
MAX_YAML_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """How many values ``node`` stands for with its aliases expanded; stops counting past ``limit``."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = limit + 1  # a node inside itself (a recursive alias) is unbounded
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        memo[id(n)] = total = min(total, limit + 1)
        return total

    return size(node)


def _bounded_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` that refuses, before building anything, a document too large once expanded."""
    if len(text) > MAX_YAML_BYTES:
        raise RecipeError(f"{path}: {len(text)} characters; optim reads YAML files of at most "
                          f"{MAX_YAML_BYTES >> 20} MiB")
    aliases = sum(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader))
    if aliases > MAX_YAML_ALIASES:
        raise RecipeError(f"{path}: {aliases} YAML aliases (*name); optim allows at most {MAX_YAML_ALIASES}: "
                          "write the values out")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise RecipeError(f"{path}: its aliases expand to more than {MAX_YAML_NODES:,} values (an alias "
                              "bomb?); optim refuses it: write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise RecipeError(f"file not found: {path}")
    try:
        return _bounded_yaml(path.read_text(), path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (expected YAML text)") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply to be a recipe") from None


_DATA_SPEC_FORM = "a mapping with kind and path, or the path of a .yaml data spec file"


def _data_spec_hint(value: str, base: Path) -> str | None:
    """The spec to write for a plain data location (``x.npy``, a folder, ``synthetic:N``), or None
    when ``value`` does not look like one."""
    for kind in ("synthetic", "photos"):
        if value.startswith(f"{kind}:"):
            return f"{{kind: {kind}, count: {value.split(':', 1)[1].strip() or 'N'}}}"
    p = Path(value)
    kind = {".npy": "npy", ".npz": "npz"}.get(p.suffix.lower())
    if kind is None and ("idx" in p.name or p.name.endswith(("-ubyte", "-ubyte.gz"))):
        kind = "idx"
    if kind is None and (base / p).is_dir():
        kind = "folder"
    return None if kind is None else f"{{kind: {kind}, path: {value}}}"


def load_data_spec(value: Any, base: Path, where: str) -> DataSpec:
    """A data spec given inline, or as the path of a YAML spec file (e.g. under calib/)."""
    if isinstance(value, str):
        hint = _data_spec_hint(value, base) if Path(value).suffix.lower() not in (".yaml", ".yml") else None
        if hint is not None:  # a data file where a spec is expected
            raise RecipeError(f"{where}: expects a data spec ({_DATA_SPEC_FORM}), got the data "
                              f"'{value}': write data: {hint}")
        spec_path = (base / value).resolve()
        if not spec_path.is_file():
            raise RecipeError(f"{where}: data spec file not found: {spec_path} (a data spec is "
                              f"{_DATA_SPEC_FORM}, e.g. data: {{kind: npy, path: ./images.npy}})")
        try:
            content = spec_path.read_text()
        except UnicodeDecodeError:
            raise RecipeError(f"{where}: expects a data spec ({_DATA_SPEC_FORM}), but {spec_path} is not "
                              f"a YAML text file: for a data file write data: {{kind: KIND, path: {value}}} "
                              "with KIND one of npz, npy, idx, folder") from None
        content = _read_yaml(spec_path) if content.strip() else None
        if not isinstance(content, dict):
            raise RecipeError(f"{spec_path}: a data spec must be a YAML mapping (kind, path, ...), "
                              "e.g. {kind: npy, path: ./images.npy}")
        return load_data_spec(content, spec_path.parent, str(spec_path))
    try:
        return DataSpec.model_validate(value).resolved(base)
    except ValidationError as exc:
        raise RecipeError(validation_message(where, exc)) from None


def _onnx_source(value: str, base: Path, recipe: Path) -> Path:
    """``model.source: onnx:PATH``: the user's own FP32 ONNX file, relative to the recipe's folder."""
    if not value.strip():
        raise RecipeError(f"{recipe}: model.source 'onnx:' names no file: write onnx:PATH (relative to the recipe)")
    p = Path(value.strip()).expanduser()
    p = p if p.is_absolute() else (base / p).resolve()
    if not p.is_file():
        raise RecipeError(f"{recipe}: model.source: ONNX file not found: {p} "
                          "(a relative onnx:PATH is relative to the recipe's folder)")
    return p


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
    if isinstance(model, dict) and isinstance(model.get("source"), str) and model["source"].startswith("onnx:"):
        model["source"] = f"onnx:{_onnx_source(model['source'].split(':', 1)[1], base, path)}"
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(validation_message(str(path), exc)) from None
