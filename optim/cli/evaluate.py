"""``optim check`` and ``optim bench``: the check and bench stages on files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.cli.common import RecipeOpt, _ints, _recipe, _task_name


def _recipe_gates(r, candidate: Path) -> dict | None:
    from optim.api import recipe_gates

    return recipe_gates(r, candidate)


def _gates(task, base: dict | None = None, **given: float | None):
    """The task's gates (``optim.api.task_gates``), an unknown one named as its --flag."""
    from optim.api import task_gates

    return task_gates(task, base, flags=True, **given)


def register(app: typer.Typer) -> None:
    @app.command()
    def check(
        candidate: Annotated[Path, typer.Argument(help="ONNX model, or TensorRT engine (.plan), to check.")],
        reference: Annotated[Path, typer.Option(help="The FP32 reference ONNX.")],
        data: Annotated[str, typer.Option(help="Evaluation data: .npz/.npy, IDX, image folder, spec .yaml, synthetic:N.")],
        labels: Annotated[Optional[Path], typer.Option(help="Labels .npy/IDX file when the data carries none.")] = None,
        samples: Annotated[Optional[int], typer.Option(help="Use the first N samples.")] = None,
        batch_size: Annotated[int, typer.Option(help="Inference batch size.")] = 256,
        max_top1_drop: Annotated[Optional[float], typer.Option(help="Gate: most top-1 points the candidate may lose.")] = None,
        min_cosine: Annotated[Optional[float], typer.Option(help="Gate: least mean cosine similarity to FP32.")] = None,
        min_top1_agreement: Annotated[Optional[float], typer.Option(help="Gate: least top-1 agreement with FP32, in %.")] = None,
        max_abs_error: Annotated[Optional[float], typer.Option(help="Gate: largest absolute output error.")] = None,
        max_map_drop: Annotated[Optional[float], typer.Option(help="Gate (detection): most mAP@0.5:0.95 points the candidate may lose.")] = None,
        min_map: Annotated[Optional[float], typer.Option(help="Gate (detection): least mAP@0.5:0.95, in %.")] = None,
        min_agreement: Annotated[Optional[float], typer.Option(help="Gate (detection): least mAP@0.5:0.95 against FP32's detections, in % (default 75; 0 turns it off).")] = None,
        task_name: Annotated[Optional[str], typer.Option("--task", help="classification or detection; default: the --recipe's task, else classification.")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON here.")] = None,
        recipe: RecipeOpt = None,
        strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when the check is NOT MEANINGFUL (the reference "
                                             "cannot tell a good candidate from a bad one, e.g. too few FP32 boxes), "
                                             "as for a failed gate. Default: the recipe's check.strict, else off.")] = False,
        backend: Annotated[str, typer.Option(help="Where the candidate runs: auto (ONNX: ORT CPU, .plan: TensorRT), "
                                                  "openvino, openvino-bf16, openvino-f16, ort-cuda, ort-tensorrt. "
                                                  "The FP32 reference always runs on ONNX Runtime CPU.")] = "auto",
    ) -> None:
        """Compare a candidate with the FP32 reference: output deltas, task accuracy, gates.

        Gates are those of the task (--task, or the --recipe's): classification has
        --max-top1-drop, --min-cosine, --min-top1-agreement, --max-abs-error; detection has
        --max-map-drop, --min-map, --min-agreement, --max-abs-error."""
        from optim import api
        from optim.artifacts import check_output_file, write_json
        from optim.backends import backend_for
        from optim.stages.check import raise_on_failures
        from optim.tasks import get_task

        if json_out:
            check_output_file(json_out, "--json")
        backend_for(candidate, backend)  # an unknown name, or one that does not run this file: exit 2 now
        r = _recipe(recipe)
        task = get_task(_task_name(task_name, r))
        gates = _gates(task, _recipe_gates(r, candidate), max_top1_drop=max_top1_drop, min_cosine=min_cosine,
                       min_top1_agreement=min_top1_agreement, max_abs_error=max_abs_error,
                       max_map_drop=max_map_drop, min_map=min_map, min_agreement=min_agreement)
        # the Python API's check (optim.check): the same data loading and stage function
        res = api.check(candidate, reference, data, labels=labels, samples=samples, batch_size=batch_size,
                        task=task.name, gates=gates, recipe=r, backend=backend)
        for name, d in res.outputs.items():
            print(task.output_line(name, d))
        if res.accuracy:
            print(task.accuracy_line(res.accuracy, res.samples))
        print(f"{res.tag}: {task.summary(res.outputs, res.accuracy)}")
        for w in res.warnings:
            print(f"NOT MEANINGFUL: {w}")
        print(f"method: {res.method}")
        for g in res.gates:
            print(g.line(res.tag))
        strict = strict or bool(r is not None and r.check.strict)
        if res.warnings and not strict:
            print(f"NOT MEANINGFUL: {res.tag}'s gates prove nothing on this data; --strict makes this exit 3")
        if json_out:
            write_json(json_out, res.as_dict())
        raise_on_failures([res], strict=strict)


    @app.command()
    def bench(
        models: Annotated[list[Path], typer.Argument(help="ONNX models or TensorRT engines (.plan), measured one after another.")],
        batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,64",
        warmup: Annotated[int, typer.Option(help="Untimed runs per batch size.")] = 5,
        iterations: Annotated[int, typer.Option(help="Timed runs per batch size.")] = 30,
        threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: all cores).")] = None,
        backend: Annotated[str, typer.Option(help="auto (ONNX: ORT CPU, .plan: TensorRT), openvino, openvino-bf16, openvino-f16, ort-cuda, ort-tensorrt.")] = "auto",
        cuda_graph: Annotated[bool, typer.Option(help="Engines: replay a captured CUDA graph.")] = False,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write results as JSON here.")] = None,
    ) -> None:
        """Latency (median/p90/p99) and throughput per batch size: ORT CPU, TensorRT engines, ORT GPU providers."""
        from optim import api
        from optim.artifacts import check_output_file, write_json
        from optim.settings import BenchSettings

        if json_out:
            check_output_file(json_out, "--json")
        s = BenchSettings(batch_sizes=_ints(batch_sizes, "--batch-sizes"), warmup=warmup,
                          iterations=iterations, threads=threads, cuda_graph=cuda_graph)
        results = api.bench(list(models), settings=s, backend=backend)  # the Python API's bench (optim.bench)
        base = {}
        print(f"{'model':<36} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'samples/s':>10} {'x first':>8}")
        for res in results:
            if res.skipped:
                print(f"{Path(res.model).name:<36} not run: {res.skipped}")
                continue
            for t in res.timings:
                base.setdefault(t.batch, t.throughput)
                print(f"{Path(res.model).name:<36} {t.batch:>5} {t.median_ms:>9.3f} {t.p90_ms:>9.3f} "
                      f"{t.p99_ms:>9.3f} {t.throughput:>10.1f} {t.throughput / base[t.batch]:>8.2f}")
        for res in results:
            print(f"{Path(res.model).name}: {res.method}")
        if json_out:
            write_json(json_out, [r.as_dict() for r in results])


