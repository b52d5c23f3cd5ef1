"""What a Triton model repository holds for a run folder, decided in plain code.

One model per deployable entry of the run (``run.json`` tags, read as ``optim.runfolder.RunInfo``;
the ``-nobudget`` comparison entries are left out): the entry's TensorRT engine(s) (platform ``tensorrt_plan``; one
file per compute capability, named through ``cc_model_filenames``, when engines for more
than one GPU architecture exist) or its ONNX file (backend ``onnxruntime``). Inputs and
outputs (names, Triton data types, dims) are read from the ONNX graph (for an engine: the
ONNX its manifest names, found by sha256, and the optimization profile its manifest
records). ``max_batch_size`` and the dynamic batcher's preferred sizes come from the batch
profile: an engine's own profile, else the recipe's ``input.batch`` as run.json records it
(``RunInfo.batch``), else ``--max-batch``.

A model with fused preprocessing (uint8 NHWC frames through OptimPreprocess) is deployed
as such where TensorRT runs it, with the plugin library copied beside it. Triton's
onnxruntime backend can only get that op from an ONNX Runtime custom-op library, which
optim does not build (its ONNX Runtime route is a Python op), so there the entry's model
without the op (float NCHW input) is deployed and the README says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from optim.artifacts import Manifest, sha256_file
from optim.stages.deploy import schema
from optim.errors import InputError
from optim.runfolder import Entry, RunInfo, RunLayout
from optim.settings import Strict


class TensorSpec(Strict):
    name: str
    data_type: str  # Triton DataType name, e.g. TYPE_FP32
    dims: tuple[int, ...]  # without the batch axis when the model is batched; -1: any size


class FileSpec(Strict):
    src: str  # the file copied (absolute)
    dest: str  # its path inside the model folder
    sha256: str
    artifact: str = ""  # its name in the run's manifest, when recorded


class ModelPlan(Strict):
    name: str
    tag: str
    backend: Literal["tensorrt", "onnxruntime"]
    source: str  # the run folder file deployed
    files: tuple[FileSpec, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # 0: the model has a fixed batch (dims hold it)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    instance_kind: Literal["KIND_GPU", "KIND_CPU"] = "KIND_GPU"
    instance_count: int = 1
    cc_model_filenames: tuple[tuple[str, str], ...] = ()  # (compute capability, file in 1/)
    plugins: tuple[str, ...] = ()  # plugin libraries Triton must load (paths inside the model folder)
    missing_plugins: tuple[str, ...] = ()  # plugin libraries the engine needs that are not here
    frames: bool = False  # takes uint8 NHWC frames (fused preprocessing)
    tensorrt: tuple[str, ...] = ()  # TensorRT versions that built the engines
    batch_source: str = ""
    notes: tuple[str, ...] = ()


class Options(Strict):
    """What ``optim deploy triton`` may choose (its flags)."""

    backend: Literal["auto", "tensorrt", "onnxruntime"] = "auto"
    onnx_instance: Literal["gpu", "cpu"] = "gpu"
    instances: int = 1
    max_batch: int | None = None
    preferred: tuple[int, ...] | None = None
    queue_delay_us: int = 100
    nms: bool | None = None  # ONNX models of a detection run: the decode + NMS file (None: where the run has one)


class RepoPlan(Strict):
    run_dir: str
    recipe: str
    models: tuple[ModelPlan, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (tag, why)


def model_name(recipe: str, tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{recipe}-{tag}")


# -- reading the run ---------------------------------------------------------------------------
class Run:
    """A run folder as deploy reads it: run.json (``RunInfo``), the manifest, the files they name."""

    def __init__(self, root: Path, exclude: Path | None = None) -> None:
        self.root = Path(root)
        self.layout = RunLayout(self.root)
        if not self.layout.path(RunLayout.RUN_JSON).is_file():
            raise InputError(f"{self.root} is not an optim run folder (no run.json): run `optim run RECIPE` first")
        self.info = RunInfo.read(self.layout.path(RunLayout.RUN_JSON))
        self.manifest = Manifest()
        manifest_json = self.layout.path(RunLayout.MANIFEST)
        if manifest_json.is_file():
            try:
                self.manifest = Manifest.model_validate_json(manifest_json.read_text())
            except ValueError:
                raise InputError(f"{manifest_json} is not a valid optim manifest") from None
        self.exclude = Path(exclude).resolve() if exclude else None
        self._sha: dict[Path, str] = {}

    @property
    def recipe(self) -> str:
        return str(self.info.recipe or self.root.name)

    def tags(self) -> list[str]:
        return self.info.deployable_tags()

    def sha(self, p: Path) -> str:
        p = Path(p).resolve()
        if p not in self._sha:
            self._sha[p] = sha256_file(p)
        return self._sha[p]

    def file(self, rel: str, artifact: str = "") -> FileSpec:
        """A file of the run, checked against the manifest's sha256 when the manifest records it."""
        p = (self.root / rel).resolve()
        if not p.is_file():
            raise InputError(f"{self.root / rel} is missing (run.json or the manifest names it); rerun optim run")
        rec = self.manifest.artifacts.get(artifact) if artifact else self.record_for(rel)
        sha = self.sha(p)
        if rec is not None and rec.sha256 != sha:
            raise InputError(f"{self.root / rel} changed since the run recorded it (sha256 differs from "
                             f"{RunLayout.MANIFEST}); rerun optim run on {self.root}")
        return FileSpec(src=str(p), dest=p.name, sha256=sha, artifact=rec.name if rec else "")

    def record_for(self, rel: str):
        return next((rec for rec in self.manifest.artifacts.values() if rec.path == rel), None)

    def onnx_files(self) -> list[Path]:
        return [p for p in sorted(self.root.glob("*.onnx"))
                if not (self.exclude and self.exclude in p.resolve().parents)]

    def engines(self, tag: str) -> list[tuple[str, str]]:
        """(relative path, manifest name) of each TensorRT engine built for ``tag`` at the recipe's size.
        TensorRT-RTX plans are left out: Triton's TensorRT backend cannot load them (optim deploy rtx)."""
        from optim.backends.engine_compat import manifest_path, read_manifest

        def tensorrt(rel: str) -> bool:
            p = self.root / rel
            return not manifest_path(p).is_file() or read_manifest(p).get("flavour", "tensorrt") == "tensorrt"

        recs = [(rec.path, rec.name) for rec in self.manifest.artifacts.values()
                if rec.kind == "engine" and rec.tag == tag and "/" not in rec.path and ".nms." not in rec.path
                and tensorrt(rec.path)]
        if recs:
            return sorted(recs)
        prefix = RunLayout.model(tag, engine="*").removesuffix("*.plan")  # model.TAG.
        return [(p.name, "") for p in sorted(self.root.glob(RunLayout.model(tag, engine="*")))
                if "." not in p.name[len(prefix):-len(".plan")] and tensorrt(p.name)]

    def unfused(self, rel: str) -> str | None:
        """The model a fused ``*.frames.onnx`` was made from (its parent in the manifest)."""
        rec = self.record_for(rel)
        if rec is not None and rec.parents:
            parent = self.manifest.artifacts.get(rec.parents[0])
            if parent is not None and (self.root / parent.path).is_file():
                return parent.path
        plain = RunLayout.made_from(rel, "frames")
        return plain if plain is not None and (self.root / plain).is_file() else None

    def batch_profile(self, engine_manifests: list[dict]) -> tuple[tuple[int, int, int] | None, str]:
        """(min, opt, max) of the batch and where it was read from, or (None, why not)."""
        if self.info.batch is not None:
            return self.info.batch.triple(), "run.json (the recipe's input.batch)"
        why = "run.json has no batch (written by an optim before it recorded one: rerun optim run)"
        for man in engine_manifests:
            prof = (man.get("plan") or {}).get("profile") or {}
            if prof.get("max"):
                return (prof["min"][0], prof["opt"][0], prof["max"][0]), f"engine {man.get('engine')} profile"
        return None, why


# -- one model ---------------------------------------------------------------------------------
def tensors(model_path: Path) -> tuple[list[Any], list[Any], bool]:
    """Inputs and outputs of an ONNX graph (TensorInfo), and whether its batch axis is dynamic."""
    from optim.onnx_tools import graph_inputs, graph_outputs, load_onnx

    model = load_onnx(model_path, check=False)
    ins, outs = graph_inputs(model), graph_outputs(model)
    batched = all(tensor.shape and not isinstance(tensor.shape[0], int) for tensor in ins + outs)
    return ins, outs, batched


def _spec(tensor, batched: bool, where: str) -> TensorSpec:
    dims = tensor.shape[1:] if batched else tensor.shape
    return TensorSpec(name=tensor.name, data_type=schema.triton_dtype(tensor.elem_type, where),
                      dims=tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims))


def preferred_sizes(opt: int, mx: int, given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given is not None:
        bad = [b for b in given if b < 1 or b > mx]
        if bad:
            raise InputError(f"--preferred {','.join(map(str, bad))}: preferred batch sizes must be 1..{mx} "
                             "(the model's max batch)")
        return tuple(sorted(set(given)))
    return tuple(sorted({b for b in (opt, mx) if 1 < b <= mx}))


def _has_op(path: Path) -> bool:
    from optim.onnx_tools import load_onnx
    from optim.ops.preprocess import has_op

    return has_op(load_onnx(path, check=False))


def _plugin_file(entry: dict) -> Path | None:
    """A plugin library an engine was built with: where its manifest says, or optim's own build,
    as long as the sha256 matches."""
    p, sha = Path(str(entry.get("path", ""))), entry.get("sha256")
    if p.is_file() and sha256_file(p) == sha:
        return p
    from optim.ops.plugins import LIBRARIES, find

    for kind, (name, _) in LIBRARIES.items():
        q = find(kind) if name == p.name else None
        if q is not None and sha256_file(q) == sha:
            return q
    return None


def plan_engines(run: Run, tag: str, engines: list[tuple[str, str]], opts: Options) -> ModelPlan:
    from optim.backends.engine_compat import read_manifest

    manifests = [read_manifest(run.root / rel) for rel, _ in engines]
    ccs = [str((manifest.get("gpu") or {}).get("compute_capability", "?")) for manifest in manifests]
    if len(set(ccs)) != len(ccs):
        raise InputError(f"entry {tag} has several engines for compute capability {ccs}: "
                         f"{', '.join(rel for rel, _ in engines)}; keep one per GPU architecture")
    onnx_shas = {manifest.get("onnx_sha256") for manifest in manifests}
    if len(onnx_shas) != 1:
        raise InputError(f"the engines of entry {tag} were built from different ONNX files; rebuild them from one")
    src = next((p for p in run.onnx_files() if run.sha(p) == next(iter(onnx_shas))), None)
    if src is None:
        raise InputError(f"the ONNX file engine {engines[0][0]} was built from (sha256 {next(iter(onnx_shas))[:12]}...) "
                         f"is not in {run.root}, so its inputs and outputs cannot be read")
    ins, outs, batched = tensors(src)
    profs = [(manifest.get("plan") or {}).get("profile") or {} for manifest in manifests]
    name = profs[0].get("input")
    if len(ins) != 1 or ins[0].name != name:
        raise InputError(f"engine {engines[0][0]}: its profile is for input '{name}', its ONNX {src.name} has "
                         f"{[tensor.name for tensor in ins]}")
    mx, opt = min(prof["max"][0] for prof in profs), profs[0]["opt"][0]
    if opts.max_batch is not None:
        if opts.max_batch > mx:
            raise InputError(f"--max-batch {opts.max_batch} is more than engine {engines[0][0]} takes (its profile's "
                             f"max batch is {mx})")
        mx, opt = opts.max_batch, min(opt, opts.max_batch)
    fixed = all(prof["min"][0] == prof["max"][0] for prof in profs) and not batched
    files, cc_names, plugins, missing = [], [], [], []
    for (rel, art), manifest, cc in zip(engines, manifests, ccs):
        dest = "model.plan" if len(engines) == 1 else f"model.sm{cc.replace('.', '')}.plan"
        files += [run.file(rel, art).model_copy(update={"dest": f"1/{dest}"}),
                  run.file(RunLayout.engine_manifest(rel)).model_copy(update={"dest": f"1/{dest}.json"})]
        if len(engines) > 1:
            cc_names.append((cc, dest))
        for entry in manifest.get("plugins") or []:
            lib = _plugin_file(entry)
            lib_name = Path(str(entry.get("path"))).name
            if lib is None:
                missing.append(f"{lib_name} (sha256 {str(entry.get('sha256'))[:12]}...)")
            elif f"plugins/{lib_name}" not in plugins:
                plugins.append(f"plugins/{lib_name}")
                files.append(FileSpec(src=str(lib), dest=f"plugins/{lib_name}", sha256=sha256_file(lib)))
    notes = [prof["note"] for prof in profs if prof.get("note")]
    return ModelPlan(
        name=model_name(run.recipe, tag), tag=tag, backend="tensorrt", source=", ".join(rel for rel, _ in engines),
        files=tuple(files), inputs=tuple(_spec(tensor, not fixed, src.name) for tensor in ins),
        outputs=tuple(_spec(tensor, not fixed, src.name) for tensor in outs),
        max_batch_size=0 if fixed else mx, preferred_batch_sizes=() if fixed else preferred_sizes(opt, mx, opts.preferred),
        max_queue_delay_us=opts.queue_delay_us, instance_kind="KIND_GPU", instance_count=opts.instances,
        cc_model_filenames=tuple(cc_names), plugins=tuple(plugins), missing_plugins=tuple(missing),
        frames=_has_op(src), tensorrt=tuple(sorted({str(manifest.get("tensorrt")) for manifest in manifests})),
        batch_source=f"engine profile{'s' if len(manifests) > 1 else ''} "
                     f"({'/'.join(map(str, (profs[0]['min'][0], opt, mx)))})",
        notes=tuple(notes))


def plan_onnx(run: Run, tag: str, profile: tuple[int, int, int] | None, source: str, opts: Options) -> ModelPlan:
    rel = run.info.files.get(tag) or RunLayout.model(tag)
    notes = []
    with_nms = run.info.nms_files.get(tag)
    if opts.nms and not with_nms:
        raise InputError(f"--nms: the run has no decode + NMS file for {tag} (give the recipe an nms: key "
                         "and rerun optim run)")
    if with_nms and opts.nms is not False:
        notes.append(f"{with_nms}: decode + NMS in the graph (outputs num_dets, det_boxes, det_scores, "
                     f"det_classes), made from {rel}; --raw deploys the raw-output model")
        rel = with_nms
    spec = run.file(rel)  # checked against the manifest before anything reads it
    if _has_op(Path(spec.src)):
        plain = run.unfused(rel)
        if plain is None:
            raise InputError(f"{rel} takes frames through OptimPreprocess, which Triton's onnxruntime backend cannot "
                             "run, and the model without it is not in the run folder")
        notes.append(f"{rel} takes uint8 frames through OptimPreprocess, which Triton's onnxruntime backend can only "
                     f"run from an ONNX Runtime custom-op library optim does not build; {plain} (float input, "
                     "preprocess on the client) is deployed instead. Deploy the TensorRT engine for frames input.")
        rel = plain
        spec = run.file(rel)
    ins, outs, batched = tensors(Path(spec.src))
    cpu_placed = Entry.parse(tag).cpu_placed
    if cpu_placed and opts.onnx_instance == "gpu":
        notes.append(f"{rel} is placed for ONNX Runtime on CPU (integer CPU kernels, in the INT8 format of the "
                     "CPU class that made it): KIND_CPU whatever --onnx-instance says")
    if batched and opts.max_batch is not None:
        opt = min(profile[1], opts.max_batch) if profile else opts.max_batch
        profile, source = (1, opt, opts.max_batch), "--max-batch"
    if batched and profile is None:
        raise InputError(f"the batch profile of {run.root} is not recorded: {source}; pass --max-batch N")
    mx = profile[2] if batched else 0
    return ModelPlan(
        name=model_name(run.recipe, tag), tag=tag, backend="onnxruntime", source=rel,
        files=(spec.model_copy(update={"dest": "1/model.onnx"}),),
        inputs=tuple(_spec(tensor, batched, rel) for tensor in ins),
        outputs=tuple(_spec(tensor, batched, rel) for tensor in outs),
        max_batch_size=mx, preferred_batch_sizes=preferred_sizes(profile[1], mx, opts.preferred) if batched else (),
        max_queue_delay_us=opts.queue_delay_us, instance_count=opts.instances,
        instance_kind="KIND_GPU" if opts.onnx_instance == "gpu" and not cpu_placed else "KIND_CPU",
        batch_source=source if batched else "fixed batch in the ONNX graph", notes=tuple(notes))


def plan_repository(run_dir: Path, opts: Options, exclude: Path | None = None) -> RepoPlan:
    """Which model each deployable entry becomes, and why an entry is left out."""
    from optim.backends.engine_compat import read_manifest

    run = Run(run_dir, exclude)
    tags = run.tags()
    if not tags:
        raise InputError(f"{run.layout.path(RunLayout.RUN_JSON)} lists no entries to deploy")
    engines = {tag: run.engines(tag) for tag in tags}
    manifests = [read_manifest(run.root / rel) for found in engines.values() for rel, _ in found]
    profile, source = run.batch_profile(manifests)
    models, skipped = [], []
    for tag in tags:
        if opts.backend != "onnxruntime" and engines[tag]:
            models.append(plan_engines(run, tag, engines[tag], opts))
        elif opts.backend == "tensorrt":
            why = run.info.gpu.not_run.get(tag) or "no engine in the run folder"
            skipped.append((tag, f"no TensorRT engine: {why}"))
        else:
            models.append(plan_onnx(run, tag, profile, source, opts))
    if not models:
        raise InputError(f"nothing to deploy from {run.root} with --backend {opts.backend}: "
                         + "; ".join(f"{tag}: {why}" for tag, why in skipped))
    return RepoPlan(run_dir=str(run.root.resolve()), recipe=run.recipe, models=tuple(models), skipped=tuple(skipped))


# -- the config ----------------------------------------------------------------------------------
def model_config(model: ModelPlan):
    """The ModelConfig message of one model (printed with text_format, it is its config.pbtxt)."""
    pb = schema.pb2()
    config = pb.ModelConfig(name=model.name, max_batch_size=model.max_batch_size)
    if model.backend == "tensorrt":
        config.platform = "tensorrt_plan"
    else:
        config.backend = "onnxruntime"
    for tensor in model.inputs:
        config.input.add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type), dims=list(tensor.dims))
    for tensor in model.outputs:
        config.output.add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type), dims=list(tensor.dims))
    if model.max_batch_size > 0:
        config.dynamic_batching.preferred_batch_size.extend(model.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = model.max_queue_delay_us
    config.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(model.instance_kind), count=model.instance_count)
    for cc, fname in model.cc_model_filenames:
        config.cc_model_filenames[cc] = fname
    return config


def config_text(model: ModelPlan) -> str:
    head = [f"# {model.name}: written by optim deploy triton as Triton's ModelConfig message",
            f"# from {model.source} (entry {model.tag}); schema: {schema.describe()}"]
    if model.plugins:
        head.append(f"# the engine needs plugin libraries loaded by Triton: {', '.join(model.plugins)} (see README.md)")
    return "\n".join(head) + "\n" + schema.to_text(model_config(model))
