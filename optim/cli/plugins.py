"""CLI pieces for the csrc/ plugins: ``optim plugins`` and ``optim fuse-preprocess``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.cli.common import RecipeOpt
from optim.console import info
from optim.errors import InputError


def _hw(text: str, what: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise InputError(f"{what} must be HxW, e.g. 480x640, got '{text}'") from None
    if h < 1 or w < 1:
        raise InputError(f"{what} must be positive, got '{text}'")
    return h, w


def register(app: typer.Typer) -> None:
    @app.command()
    def plugins() -> None:
        """List the plugin libraries built from csrc/, and whether each loads here."""
        from optim.ops.plugins import status

        for s in status():
            where = str(s.path) if s.path else "-"
            print(f"{s.kind:<9} {'yes' if s.loadable else 'no ':<4} {s.what}")
            print(f"{'':<14}{where}: {s.why}")

    @app.command("bench-preprocess")
    def bench_preprocess_cmd(
        frame: Annotated[str, typer.Option(help="Raw frame size HxW.")] = "480x640",
        size: Annotated[str, typer.Option(help="The model's input size HxW.")] = "224x224",
        channels: Annotated[int, typer.Option(help="1 or 3.")] = 3,
        out_dtype: Annotated[str, typer.Option(help="float32 or float16.")] = "float32",
        batch: Annotated[int, typer.Option(help="Frames per call (the kernels are also timed at batch 1).")] = 16,
        iterations: Annotated[int, typer.Option(help="Timed calls (GPU: samples per kernel and batch).")] = 20,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result as JSON here.")] = None,
    ) -> None:
        """Per image: bytes copied to the GPU, host CPU time, and the CUDA kernels (v2 vs the v1 baseline)."""
        from optim.artifacts import check_output_file, write_json
        from optim.ops.bench_preprocess import bench_preprocess
        from optim.ops.preprocess import PreprocessOp

        oh, ow = _hw(size, "--size")
        fh, fw = _hw(frame, "--frame")
        if channels not in (1, 3):
            raise InputError("--channels must be 1 or 3")
        if batch < 1 or iterations < 1:
            raise InputError("--batch and --iterations must be at least 1")
        if json_out is not None:
            check_output_file(json_out, "--json")
        op = PreprocessOp(out_h=oh, out_w=ow, out_dtype=out_dtype, mean=(0.45,) * channels,
                          std=(0.225,) * channels)
        r = bench_preprocess((fh, fw, channels), op, batch, iterations)
        lib = ("csrc/ CPU library: not run (not built)" if r.host_ms_cpu_library is None
               else f"{r.host_ms_cpu_library:.3f} ms (csrc/ CPU library)")
        print(f"frame {fh}x{fw}x{channels} uint8 -> {channels}x{oh}x{ow} {out_dtype}, per image "
              f"(median of {iterations} calls of {batch}):")
        print(f"  host preprocessing: copies {r.h2d_bytes_host_path:,} B to the GPU; host CPU "
              f"{r.host_ms_numpy:.3f} ms (NumPy), {lib}")
        kernel = r.gpu_note if r.gpu_kernel_ms is None else f"{r.gpu_kernel_ms * 1e3:.2f} us on {r.gpu_note}"
        print(f"  fused op:           copies {r.h2d_bytes_fused:,} B to the GPU "
              f"({r.h2d_bytes_fused / r.h2d_bytes_host_path:.2f}x); no host preprocessing; GPU kernel time: "
              f"{kernel}")
        if r.gpu_timings:
            peak = f"{r.peak_gb_per_s:,.0f} GB/s" if r.peak_gb_per_s else "unknown"
            print(f"  GPU kernels, per image: {r.kernel_bytes_per_image:,} B moved (frame read + output "
                  f"written); device peak DRAM bandwidth {peak}")
            print(f"    {'kernel':<16}{'batch':>6}{'us/image':>11}{'GB/s':>9}{'of peak':>9}")
            for t in r.gpu_timings:
                name = t.kernel + (" (baseline)" if t.kernel == "v1" else
                                   " (default)" if t.kernel == r.gpu_kernel else "")
                frac = f"{t.peak_fraction:.0%}" if t.peak_fraction is not None else "-"
                print(f"    {name:<16}{t.batch:>6}{t.ms_per_image * 1e3:>11.2f}{t.gb_per_s:>9,.0f}{frac:>9}")
            if r.speedup_vs_baseline:
                print(f"  {r.gpu_kernel} vs v1 at batch {batch}: {r.speedup_vs_baseline:.2f}x faster")
        if json_out is not None:
            write_json(json_out, r.as_dict())

    @app.command("fuse-preprocess")
    def fuse_preprocess(
        model: Annotated[Path, typer.Argument(help="ONNX model with one NCHW float input (any precision).")],
        frame: Annotated[str, typer.Option(help="Size of the raw frames, HxW, e.g. 480x640.")],
        output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output ONNX (default: MODEL.frames.onnx).")] = None,
        channel_order: Annotated[str, typer.Option(help="Channel order of the frames: RGB or BGR.")] = "RGB",
        out_dtype: Annotated[str, typer.Option(help="What the op computes: float32 or float16.")] = "float32",
        scale: Annotated[float, typer.Option(help="Multiplies each uint8 value (without --recipe).")] = 1 / 255,
        mean: Annotated[str, typer.Option(help="Per-channel mean after scaling (without --recipe).")] = "0",
        std: Annotated[str, typer.Option(help="Per-channel std (without --recipe).")] = "1",
        recipe: RecipeOpt = None,
    ) -> None:
        """Prepend the OptimPreprocess op: the model then takes raw uint8 NHWC frames."""
        from optim.artifacts import check_output_file
        from optim.onnx_tools import graph_inputs, load_onnx, save_onnx
        from optim.ops.preprocess import PreprocessOp, prepend
        from optim.recipe import load_recipe
        from optim.runfolder import RunLayout

        out = output or model.with_name(RunLayout.variant(model.name, "frames"))
        check_output_file(out, "-o/--output" if output else "output (beside the model)")
        src = load_onnx(model)
        ins = graph_inputs(src)
        if len(ins) != 1 or len(ins[0].shape) != 4:
            raise InputError(f"{model} must have one NCHW input")
        _, _, h, w = ins[0].shape
        if recipe is not None:
            pp = load_recipe(recipe).preprocess
            scale, means, stds = pp.scale, pp.mean, pp.std
        else:
            try:
                means = tuple(float(v) for v in mean.split(","))
                stds = tuple(float(v) for v in std.split(","))
            except ValueError:
                raise InputError("--mean and --std take comma-separated numbers") from None
        op = PreprocessOp(out_h=int(h), out_w=int(w), scale=scale, mean=means, std=stds,
                          channel_order=channel_order, out_dtype=out_dtype)
        fused = prepend(src, op, _hw(frame, "--frame"))
        save_onnx(fused, out)
        info(f"wrote {out}: input 'frames' uint8 [batch, {frame.replace('x', ', ')}, {ins[0].shape[1]}] "
             f"-> OptimPreprocess -> {model.name}")
