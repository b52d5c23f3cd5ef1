"""The README.md of a Triton model repository written by ``optim deploy triton``."""

from __future__ import annotations

from optim.stages.deploy import schema
from optim.stages.deploy.triton import ModelPlan, RepoPlan, TensorSpec

TAG_PLACEHOLDER = "<yy.mm>"  # an NGC release, e.g. the one whose TensorRT built the engines
SERVER_IMAGE = "nvcr.io/nvidia/tritonserver"


def _tensor(tensor: TensorSpec, batched: bool) -> str:
    dims = ",".join("?" if d < 0 else str(d) for d in tensor.dims)
    return f"`{tensor.name}` {tensor.data_type.removeprefix('TYPE_').lower()} [{'N,' if batched else ''}{dims}]"


def _row(model: ModelPlan) -> str:
    batched = model.max_batch_size > 0
    kind = ("TensorRT plan" if model.backend == "tensorrt"
            else f"ONNX Runtime ({model.instance_kind.removeprefix('KIND_')})")
    files = ", ".join(spec.dest for spec in model.files
                      if spec.dest.startswith("1/") and not spec.dest.endswith(".json"))
    pref = ",".join(map(str, model.preferred_batch_sizes)) or "-"
    inputs = "; ".join(_tensor(tensor, batched) for tensor in model.inputs)
    outputs = "; ".join(_tensor(tensor, batched) for tensor in model.outputs)
    return (f"| `{model.name}` | {model.tag} | {kind} | {files} | {model.source} | {inputs} | {outputs} | "
            f"{model.max_batch_size or 'fixed'} | {pref} | {model.batch_source} |")


def _perf_line(model: ModelPlan) -> str:
    preferred = model.preferred_batch_sizes if model.max_batch_size > 0 else ()
    batch = f" -b {preferred[0]}" if preferred else ""
    shapes = "".join(f" --shape {tensor.name}:{','.join('1' if d < 0 else str(d) for d in tensor.dims)}"
                     for tensor in model.inputs if any(d < 0 for d in tensor.dims))
    return f"perf_analyzer -m {model.name} -u localhost:8001 -i grpc{batch}{shapes} --concurrency-range 1:8"


def readme(plan: RepoPlan, command: str, created: str) -> str:
    models = plan.models
    plugins = [f"/models/{model.name}/{plugin}" for model in models for plugin in model.plugins]
    preload = plugins[:1]  # one copy of each library is enough: the same file is copied per model
    versions = sorted({version for model in models for version in model.tensorrt})
    lines = [
        f"# Triton model repository: {plan.recipe}",
        "",
        f"Written by `{command}` on {created}, from the run folder `{plan.run_dir}`.",
        "",
        "Every `config.pbtxt` was built as Triton's `ModelConfig` message, printed with protobuf's text format",
        f"and parsed back against {schema.describe()}. `deploy.json` lists every file with its sha256 and where",
        "it came from. optim has not served this repository with a Triton server: what Triton does with it is",
        "unchecked.",
        "",
        "| model | entry | runs on | file | from | input | output | max batch | preferred batch | batch profile from |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row(model) for model in models),
        "",
    ]
    if plan.skipped:
        lines += ["Not deployed: " + "; ".join(f"{tag}: {why}" for tag, why in plan.skipped) + ".", ""]
    lines += ["Entries ending in `-nobudget` (the quantized model without its accuracy budget, kept for "
              "comparison in the report) are never deployed.", ""]
    frames = [model for model in models if model.frames]
    if frames:
        lines += ["Models that take raw frames (fused preprocessing, `OptimPreprocess` in the graph): "
                  + ", ".join(f"`{model.name}`" for model in frames) + ". Send uint8 frames `[N, H, W, C]` (NHWC); "
                  "the model resizes and normalises them on the GPU.", ""]
    notes = [f"- `{model.name}`: {note}" for model in models for note in model.notes]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    if any(model.backend == "onnxruntime" and model.instance_kind == "KIND_GPU" for model in models):
        lines += ["ONNX Runtime models run on the GPU (`KIND_GPU`, ONNX Runtime's CUDA execution provider); "
                  "`optim deploy triton --onnx-instance cpu` writes them for the CPU.", ""]
    env = f" \\\n  -e LD_PRELOAD={preload[0]}" if preload else ""
    lines += [
        "## Serve it",
        "",
        "Pin the Triton container to one NGC release (replace the placeholder)."
        + (f" A TensorRT engine loads only in the TensorRT version that built it ({', '.join(versions)}): pick the "
           "release whose TensorRT is that version, or rebuild the engines in it." if versions else ""),
        "",
        "```bash",
        f"TRITON_TAG={TAG_PLACEHOLDER}-py3",
        f"docker run --rm --gpus all --shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \\\n"
        f"  -v \"$PWD\":/models{env} \\\n  {SERVER_IMAGE}:$TRITON_TAG tritonserver --model-repository=/models",
        "curl -s localhost:8000/v2/health/ready && echo ready",
        "```",
        "",
    ]
    if plugins or any(model.missing_plugins for model in models):
        lines += [
            "### Plugin libraries",
            "",
            "These engines contain TensorRT plugin layers, so the plugin library must be loaded into the server "
            "before the engines are deserialized. Each model folder carries a copy (`plugins/` is not a version "
            "folder, so Triton ignores it as a model version). Either preload it into the server process, as above "
            f"(`-e LD_PRELOAD={preload[0] if preload else '/models/MODEL/plugins/LIB.so'}`), or name it to the TensorRT "
            f"backend: `tritonserver --model-repository=/models --backend-config=tensorrt,plugins=\"{';'.join(sorted(set(plugins))) or '/models/MODEL/plugins/LIB.so'}\"`.",
            "",
            "Both routes only `dlopen` the library. A library that registers its plugin creators when it is loaded "
            "(`REGISTER_TENSORRT_PLUGIN` or a static registrar) works that way; optim's `liboptim_preprocess_trt.so` "
            "publishes `OptimPreprocess` through `getCreators` for `IPluginRegistry::loadLibrary` and does not "
            "register itself on load, so as built it is not expected to be found by Triton this way: it needs a "
            "load-time registrar first (not done; nothing here has been tried on a server).",
            "",
        ]
        missing = [f"`{model.name}` needs {', '.join(model.missing_plugins)}"
                   for model in models if model.missing_plugins]
        if missing:
            lines += ["Missing here (copy them into the model's `plugins/` folder before serving): "
                      + "; ".join(missing) + ".", ""]
    lines += [
        "## Measure it",
        "",
        "With the server up, in Triton's SDK container of the same release (`TRITON_TAG` as above), one line per model:",
        "",
        "```bash",
        f"docker run -it --rm --net=host {SERVER_IMAGE}:$TRITON_TAG-sdk",
        *(_perf_line(model) for model in models),
        "```",
        "",
    ]
    return "\n".join(lines)
