"""``optim deploy triton`` (a Triton model repository from a run folder) and ``optim ci github``
(a GitHub Actions workflow for a recipe), ``optim ci merge`` (the GPU jobs' results into one run folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.cli.common import _ints

deploy_app = typer.Typer(no_args_is_help=True, help="Deployable outputs of a run folder (a Triton model repository).")
ci_app = typer.Typer(no_args_is_help=True, help="CI workflows that run a recipe (GitHub Actions).")


@deploy_app.callback()
def _deploy() -> None:
    """Deployable outputs of a run folder (a Triton model repository)."""


@ci_app.callback()
def _ci() -> None:
    """CI workflows that run a recipe (GitHub Actions)."""


@deploy_app.command("triton")
def triton_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder, e.g. artifacts/NAME.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The model repository folder to write.")],
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists and is not empty.")] = False,
    backend: Annotated[str, typer.Option(help="auto (the TensorRT engine where the entry has one, else its ONNX), "
                                              "tensorrt (engines only) or onnxruntime (ONNX only).")] = "auto",
    onnx_instance: Annotated[str, typer.Option(help="Where ONNX Runtime models run: gpu or cpu.")] = "gpu",
    instances: Annotated[int, typer.Option(help="Model instances per model (instance_group count).")] = 1,
    max_batch: Annotated[Optional[int], typer.Option(help="max_batch_size; default: the batch profile recorded in the run.")] = None,
    preferred: Annotated[Optional[str], typer.Option(help="Preferred batch sizes of the dynamic batcher, e.g. 16,64; default: the profile's opt and max.")] = None,
    queue_delay_us: Annotated[int, typer.Option(help="Dynamic batcher: longest wait to form a batch, microseconds.")] = 100,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="If an optim run holds the run folder, stop at once (exit 6).")] = False,
    nms: Annotated[Optional[bool], typer.Option("--nms/--raw", help="Detection runs with an nms: key: deploy the ONNX "
                                                "models with decode + NMS in the graph (default where the run has "
                                                "them) or the raw-output ones.")] = None,
) -> None:
    """Write a Triton model repository: one model per entry of the run, configs checked against Triton's schema."""
    from optim.stages.deploy.triton import Options
    from optim.errors import InputError
    from optim.stages.deploy.stage import deploy_triton

    choices = {"--backend": (backend, ("auto", "tensorrt", "onnxruntime")), "--onnx-instance": (onnx_instance, ("gpu", "cpu"))}
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise InputError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
    if instances < 1 or queue_delay_us < 0 or (max_batch is not None and max_batch < 1):
        raise InputError("--instances and --max-batch must be at least 1, --queue-delay-us at least 0")
    opts = Options(backend=backend, onnx_instance=onnx_instance, instances=instances, max_batch=max_batch,
                   preferred=_ints(preferred, "--preferred") if preferred else None, queue_delay_us=queue_delay_us,
                   nms=nms)
    deploy_triton(run_dir, out, opts, force=force, wait=not no_wait)


@deploy_app.command("rtx")
def rtx_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder, e.g. artifacts/NAME.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The folder to write the engines to.")],
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists and is not empty.")] = False,
) -> None:
    """Copy the run's TensorRT-RTX engines (RTX/workstation GPUs) with their manifests and a README."""
    from rich.markup import escape

    from optim.console import info
    from optim.stages.deploy.rtx import deploy_rtx

    index = deploy_rtx(run_dir, out, force=force)
    info(escape(f"wrote {out} ({len(index['engines'])} TensorRT-RTX engines with their manifests); which GPUs each "
                f"runs on: {out / 'README.md'}"))


@ci_app.command("github")
def github_cmd(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML files (one model each).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Workflow file to write.")] = Path(".github/workflows/optim.yml"),
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Write a GitHub Actions workflow: CPU export/quantize, a GPU job per model x precision, one merged report."""
    from optim.ci_github import write_workflow

    write_workflow(recipes, out, force=force)


@ci_app.command("merge")
def merge_cmd(
    run_dir: Annotated[Path, typer.Argument(help="The CPU job's run folder, where the results are merged.")],
    sources: Annotated[list[Path], typer.Argument(help="Folders of the GPU jobs' uploads (engines, manifests, gpu/ results).")],
    no_wait: Annotated[bool, typer.Option("--no-wait", help="If an optim run holds the run folder, stop at once (exit 6).")] = False,
) -> None:
    """Merge the GPU jobs' engines and results into one run folder (then: optim report RUN_DIR)."""
    from optim.ci_github import merge_runs

    merge_runs(run_dir, sources, wait=not no_wait)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")
    app.add_typer(ci_app, name="ci")
