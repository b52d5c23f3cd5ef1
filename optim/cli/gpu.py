"""``optim build`` (TensorRT engines) and ``optim doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from optim.console import info


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        onnx_path: Annotated[Path, typer.Argument(metavar="ONNX", help="ONNX model: FP32, INT8/FP8 Q/DQ or FP16/BF16 AutoCast.")],
        target: Annotated[str, typer.Option(help="Target GPU: h100 (TensorRT, on an H100) or rtx (TensorRT-RTX, sm86/89/120, built without a GPU).")] = "h100",
        output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Engine file (default: beside the ONNX, .TARGET.plan).")] = None,
        precision: Annotated[Optional[str], typer.Option(help="FP32 ONNX only: fp16 or bf16 by builder flag (weakly typed; TensorRT 10 only, 11 removed the flags: build the AutoCast ONNX instead). Other models take theirs from the graph.")] = None,
        batch: Annotated[Optional[str], typer.Option(help="Optimization profile batch sizes min,opt,max (default 1,1,256).")] = None,
        tf32: Annotated[bool, typer.Option(help="Let FP32 layers use TF32 tensor cores.")] = False,
        opt_level: Annotated[int, typer.Option(help="Builder optimization level 0-5.")] = 3,
        workspace_mib: Annotated[Optional[int], typer.Option(help="Workspace memory limit in MiB.")] = None,
        hardware_compat: Annotated[str, typer.Option(help="none (target architecture only) or ampere_plus.")] = "none",
        version_compatible: Annotated[bool, typer.Option(help="An engine later TensorRT versions can load.")] = False,
        plugin: Annotated[Optional[list[Path]], typer.Option(help="Plugin library loaded before parsing (repeatable).")] = None,
        timing_cache: Annotated[Optional[Path], typer.Option(help="Timing cache file (default: timing.cache beside the engine).")] = None,
        recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Take the build settings and batch range from this recipe.")] = None,
    ) -> None:
        """Build a TensorRT engine (.plan) for the target GPU, with its manifest (and per-layer JSON where a GPU loads it)."""
        from optim import api

        rep = api.build(onnx_path, target=target, output=output, precision=precision, batch=batch or None,
                        recipe=recipe, tf32=tf32, opt_level=opt_level, workspace_mib=workspace_mib,
                        hardware_compat=hardware_compat, version_compatible=version_compatible,
                        plugins=plugin or (), timing_cache=timing_cache, flags=True)
        out = Path(rep.engine)
        cache = timing_cache or out.with_name("timing.cache")
        m = rep.manifest
        plan, summary = m["plan"], m["layer_summary"]
        typing = "strongly typed" if plan["strongly_typed"] else "builder flags " + "+".join(plan["flags_on"])
        where = f"on {m['gpu']['name']}" if m.get("gpu") else f"for {', '.join(m['compute_capabilities'])} (no GPU needed)"
        info(escape(f"wrote {out} ({m['bytes'] / 1024:.1f} KB, {rep.seconds:.1f} s): {m.get('flavour', 'tensorrt')} "
                    f"{m['tensorrt']} (major {m['tensorrt_major']}) {where}, {plan['precision']} {typing}, profile "
                    f"{plan['profile']['min'][0]}/{plan['profile']['opt'][0]}/{plan['profile']['max'][0]}"))
        cache_note = (f"; timing cache {cache} ({'reused' if (m['timing_cache'] or {}).get('reused') else 'new'})"
                      if m["timing_cache"] else "")
        layers = (f"layers by input precision: {summary.get('by_input_precision')} ({m['layers']})" if m["layers"]
                  else f"layers: {summary.get('note')}")
        info(escape(f"{layers}; manifest {out.name}.json{cache_note}; runs on {m['runs_on']}"))
        for note in rep.notes:
            info(f"[yellow]note[/]: {escape(note)}")


    @app.command()
    def doctor(
        target: Annotated[str, typer.Option(help="Target GPU to judge the build stage against.")] = "h100",
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    ) -> None:
        """What this machine has, which stages can run here, and the command for each missing piece."""
        from optim import doctor as doc
        from optim.backends.engine_compat import target as get_target

        t = get_target(target)
        m = doc.probe()
        print(json.dumps(doc.as_dict(m, t), indent=2) if json_out else doc.render(m, t), end="" if not json_out else "\n")


