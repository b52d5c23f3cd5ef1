"""``optim run`` (every stage of a recipe) and ``optim report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="If another optim run holds the run folder, stop at once "
                                                       "(exit 6) instead of waiting for it.")]


def register(app: typer.Typer) -> None:
    @app.command()
    def report(run_dir: Annotated[Path, typer.Argument(help="A run folder, e.g. artifacts/NAME.")],
               no_wait: NoWaitOpt = False) -> None:
        """Write report.{md,html,json,png} for a run folder and print a short summary."""
        from optim.artifacts import MANIFEST, RunDir, check_output_dir, stage_writes
        from optim.errors import InputError
        from optim.runlock import RunLock
        from optim.stages.report.stage import collect, summary_lines, write_report

        if not Path(run_dir).is_dir():
            raise InputError(f"run folder not found: {run_dir}")
        check_output_dir(run_dir, "run folder")
        with RunLock(run_dir, wait=not no_wait):
            with stage_writes("report"):
                paths = write_report(run_dir)
            if (Path(run_dir) / MANIFEST).is_file():  # keep the run's manifest true to the files
                rd = RunDir(run_dir)
                for k, p in paths.items():
                    old = rd.manifest.artifacts.get(f"report.{k}")
                    rd.record(f"report.{k}", p.name, "report", parents=old.parents if old else [])
        print("\n".join(summary_lines(*collect(run_dir))))  # the full table is in the files
        for p in paths.values():
            print(f"wrote {p}")

    @app.command()
    def verify(run_dir: Annotated[Path, typer.Argument(help="A run folder, e.g. artifacts/NAME.")]) -> None:
        """Check a run folder against its manifest: every hash, every path inside the folder, no stray
        files. One line per problem and exit 2; run it after restoring a cached run folder."""
        from rich.markup import escape

        from optim.console import console
        from optim.verify import problems

        found = problems(run_dir)
        for line in found:
            console.print("[red]problem:[/] " + escape(line))
        if found:
            raise typer.Exit(2)
        print(f"{run_dir}: every file matches its manifest")

    @app.command()
    def run(
        recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/fashion_resnet.yaml.")],
        force: Annotated[bool, typer.Option(help="Redo every stage, ignoring the cache.")] = False,
        out_root: Annotated[Path, typer.Option(help="Runs go to OUT_ROOT/<recipe name>/.")] = Path("artifacts"),
        weights: Annotated[Optional[Path], typer.Option(help="Trained weights for the recipe's model.")] = None,
        eval_samples: Annotated[Optional[int], typer.Option(help="Evaluate on the first N samples only.")] = None,
        calib_samples: Annotated[Optional[int], typer.Option(help="Calibrate on the first N samples only.")] = None,
        precisions: Annotated[Optional[str], typer.Option(help="Only these entries: tags (int8-tensorrt) or precisions (int8: every int8 entry), e.g. fp32,int8,fp16.")] = None,
        bench_iterations: Annotated[Optional[int], typer.Option(help="Timed runs per batch size.")] = None,
        strict: Annotated[bool, typer.Option("--strict", help="A check flagged NOT MEANINGFUL (e.g. too few FP32 "
                                             "boxes, untrained weights) fails the run with exit 3, as a failed "
                                             "gate does (recipe: check.strict).")] = False,
        no_wait: NoWaitOpt = False,
    ) -> None:
        """Run every stage of a recipe: export, quantize, check, bench, build (TensorRT, where it can), report."""
        from optim import api

        # the Python API's run (optim.run): a failed gate or engine build is raised, as exit 3 / 4
        api.run(recipe, out_root=out_root, force=force, weights=weights, precisions=precisions,
                eval_samples=eval_samples, calib_samples=calib_samples, bench_iterations=bench_iterations,
                strict=strict, wait=not no_wait, raise_on_failure=True)


