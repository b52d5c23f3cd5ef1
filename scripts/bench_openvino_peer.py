#!/usr/bin/env python
"""Peer benchmark on OpenVINO's CPU plugin: optim's INT8 against NNCF's INT8, from one FP32 file.

From one FP32 ONNX (default: torchvision ResNet-50 with random weights at 3x224x224, exported by
``optim export``), with the same calibration samples for both quantizers, this makes

  (a) optim's INT8 file: ``optim quantize --precision int8 --target tensorrt`` (modelopt Q/DQ),
  (a') optim's other INT8 file: ``--target onnxruntime`` (ONNX Runtime's Q/DQ, in the integer format
      this CPU class gets: ``optim.stages.quantize.scheme``; it also quantizes the final Gemm),
  (b) NNCF's post-training INT8 (``nncf.quantize`` on the OpenVINO model, saved as OpenVINO IR),

then times side by side in one process, in interleaved rounds (each round runs every model, in a
rotated order, so a change of machine load hits all of them alike):

  ORT FP32 (the baseline) | OV FP32 | OV FP32 file + bf16 hint | OV optim INT8 (both) | OV NNCF INT8

at batch 1 (p50/p99 latency) and batch 32 (throughput), 2 threads by default, and prints a table with
the ratios to ORT FP32, the cosine of each model's outputs to the ORT FP32 outputs on held-out inputs,
what each ran in (OpenVINO's layer precisions), and the CPU with its features. Not a test:

    .venv/bin/python scripts/bench_openvino_peer.py [--model FP32.onnx] [--threads 2] [--json out.json]

Calibration and held-out inputs: natural photos (``photos:N``, scikit-image's photographs with
deterministic crops and colour changes, ImageNet preprocessing) when the model takes 3xHxW images,
else standard-normal synthetic inputs. The first ``--calib-samples`` are calibration, the next
``--eval-samples`` are held out for the cosine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optim.backends import open_runner  # noqa: E402
from optim.backends.machine import cpu_info  # noqa: E402
from optim.stages.quantize.scheme import ort_int8_scheme  # noqa: E402

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def say(msg: str) -> None:
    print(msg, flush=True)


def optim_cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "optim", *map(str, args)]
    say("$ optim " + " ".join(map(str, args)))
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OPTIM_NO_PROGRESS": "1", "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        sys.exit(f"optim {args[0]} failed (exit {done.returncode})")


def fp32_model(args) -> Path:
    if args.model:
        return Path(args.model)
    out = args.work / "resnet50.fp32.onnx"
    if not out.is_file():
        optim_cli("export", "torchvision:resnet50", "--input-shape", "3,224,224", "-o", out)
    return out


def inputs(fp32: Path, n: int, kind: str) -> tuple[np.ndarray, str]:
    """``n`` model inputs: natural photos with ImageNet preprocessing for 3xHxW inputs, else synthetic."""
    from optim.data import prepare
    from optim.onnx_tools import graph_inputs, load_onnx, single_input
    from optim.recipe import InputSpec
    from optim.settings import DataSpec, Preprocess

    name, _, shape = single_input(graph_inputs(load_onnx(fp32, check=False)), str(fp32))
    spec = InputSpec(name=name, shape=shape)
    if kind == "photos" and len(shape) == 3 and shape[0] == 3 and shape[1] == shape[2]:
        pp = Preprocess(color="rgb", resize=round(shape[1] * 256 / 224), crop=shape[1], **IMAGENET)
        x, _, ds = prepare(DataSpec(kind="photos", count=n), pp, spec, n)
        return x, f"{n} natural photos (scikit-image, deterministic variants), ImageNet preprocessing"
    x = np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)
    return x, f"{n} standard-normal synthetic inputs"


def nncf_int8(fp32: Path, calib: np.ndarray, out: Path) -> str:
    """NNCF's post-training INT8 of the FP32 model on OpenVINO, saved as IR; "" or why it did not run."""
    try:
        import nncf
        import openvino as ov
    except Exception as exc:
        return f"nncf is not importable ({str(exc).splitlines()[0]}); install: .venv/bin/pip install nncf==3.4.0"
    say(f"NNCF {nncf.__version__}: nncf.quantize on {len(calib)} calibration samples (default preset, CPU)")
    t0 = time.perf_counter()
    model = ov.Core().read_model(str(fp32))
    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    quantized = nncf.quantize(model, dataset, subset_size=len(calib))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    say(f"NNCF INT8: {out} ({time.perf_counter() - t0:.0f} s)")
    return ""


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over samples of the cosine between output vectors."""
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = got.reshape(len(got), -1).astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="FP32 ONNX (default: torchvision resnet50, random weights, 3x224x224)")
    ap.add_argument("--work", type=Path, default=REPO / "artifacts" / "openvino_peer", help="where files go")
    ap.add_argument("--data", choices=("photos", "synthetic"), default="photos")
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="the throughput batch size")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--b1-iters", type=int, default=10, help="timed batch-1 runs per model per round")
    ap.add_argument("--batch-iters", type=int, default=2, help="timed big-batch runs per model per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per model and batch size")
    ap.add_argument("--force", action="store_true", help="quantize again even if the files are there")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    from optim.backends.openvino import OpenVinoRunner, layer_summary, openvino_version

    cpu = cpu_info()
    import onnxruntime

    say(f"CPU: {cpu.describe()}")
    say(f"openvino {openvino_version()}, onnxruntime {onnxruntime.__version__}, threads {args.threads}, "
        f"load average at start {os.getloadavg()[0]:.2f}")

    fp32 = fp32_model(args)
    x, data_desc = inputs(fp32, args.calib_samples + args.eval_samples, args.data)
    calib, held_out = x[: args.calib_samples], x[args.calib_samples :]
    calib_file = args.work / f"calib.{args.data}{args.calib_samples}.npy"
    np.save(calib_file, calib, allow_pickle=False)
    say(f"data: {data_desc}; first {len(calib)} calibrate both quantizers, last {len(held_out)} are held out")

    optim_file = args.work / f"{fp32.stem.removesuffix('.fp32')}.int8-tensorrt.onnx"
    if args.force or not optim_file.is_file():
        optim_cli("quantize", fp32, "--precision", "int8", "--target", "tensorrt", "--calib", calib_file,
                  "--calib-samples", len(calib), "-o", optim_file)
    # optim's onnxruntime placement, in the INT8 format this CPU class gets (optim.stages.quantize.scheme)
    scheme = ort_int8_scheme(cpu)
    ort_file = args.work / f"{fp32.stem.removesuffix('.fp32')}.int8-onnxruntime.{scheme.format}.onnx"
    if args.force or not ort_file.is_file():
        optim_cli("quantize", fp32, "--precision", "int8", "--target", "onnxruntime", "--calib", calib_file,
                  "--calib-samples", len(calib), "-o", ort_file)
    nncf_file = args.work / f"{fp32.stem.removesuffix('.fp32')}.nncf-int8.xml"
    nncf_why = ""
    if args.force or not nncf_file.is_file():
        nncf_why = nncf_int8(fp32, calib, nncf_file)

    t = args.threads
    runners = {"ORT FP32 (baseline)": open_runner(fp32, backend="onnxruntime", threads=t),
               "OV FP32": OpenVinoRunner(fp32, threads=t),
               "OV FP32 file + bf16 hint": OpenVinoRunner(fp32, threads=t, precision="bf16"),
               "OV optim INT8 (modelopt Q/DQ)": OpenVinoRunner(optim_file, threads=t),
               f"OV optim INT8 (ORT Q/DQ, {scheme.format})": OpenVinoRunner(ort_file, threads=t)}
    if not nncf_why:
        runners["OV NNCF INT8"] = OpenVinoRunner(nncf_file, threads=t)
    names = list(runners)
    for r in runners.values():
        r.activate()

    # fidelity on held-out inputs, against ORT FP32
    outs = {n: r.infer({r.input_names[0]: held_out})[r.output_names[0]] for n, r in runners.items()}
    ref = outs[names[0]]
    cos = {n: cosine(ref, o) for n, o in outs.items()}
    agree = {n: float((o.argmax(1) == ref.argmax(1)).mean() * 100) for n, o in outs.items()}
    distinct = len(np.unique(ref.argmax(1)))

    # timing: warmup, then interleaved rounds, each with a rotated order
    b1 = {n: [] for n in names}
    big = {n: [] for n in names}
    for n in names:
        runners[n].measure(1, args.warmup, 1)
        runners[n].measure(args.batch, args.warmup, 1)
    t0 = time.perf_counter()
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for n in order:
            b1[n] += runners[n].measure(1, 0, args.b1_iters)
        for n in order:
            big[n] += runners[n].measure(args.batch, 0, args.batch_iters)
        say(f"round {rnd + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.2f})")

    rows = []
    base_p50 = float(np.median(b1[names[0]])) * 1e3
    base_tput = args.batch / float(np.median(big[names[0]]))
    for n in names:
        p50 = float(np.median(b1[n])) * 1e3
        p99 = float(np.percentile(b1[n], 99)) * 1e3
        tput = args.batch / float(np.median(big[n]))
        r = runners[n]
        ran = layer_summary(r.probe.layers).replace("Conv/MatMul layers: ", "") if hasattr(r, "probe") else "f32 (ORT)"
        rows.append({"model": n, "b1_p50_ms": round(p50, 2), "b1_p99_ms": round(p99, 2),
                     "b1_x_ort": round(base_p50 / p50, 2), f"b{args.batch}_img_s": round(tput, 1),
                     f"b{args.batch}_x_ort": round(tput / base_tput, 2), "cosine": round(cos[n], 5),
                     "top1_agree_pct": round(agree[n], 1), "ran": ran, "method": r.method,
                     "note": r.timing_note, "b1_n": len(b1[n]), f"b{args.batch}_n": len(big[n])})
    for r in runners.values():
        r.deactivate()

    say("")
    say(f"CPU: {cpu.describe()}")
    say(f"model: {fp32.name}; {args.threads} threads; {args.rounds} interleaved rounds "
        f"({args.b1_iters} batch-1 and {args.batch_iters} batch-{args.batch} runs per model per round); "
        f"load average at end {os.getloadavg()[0]:.2f}")
    head = (f"| model | b1 p50 ms | b1 p99 ms | b1 × ORT FP32 | b{args.batch} img/s | b{args.batch} × ORT FP32 | "
            "cosine vs FP32 | Conv/MatMul run in |")
    say(head)
    say("|" + "---|" * 8)
    for r in rows:
        say(f"| {r['model']} | {r['b1_p50_ms']:.2f} | {r['b1_p99_ms']:.2f} | {r['b1_x_ort']:.2f} | "
            f"{r[f'b{args.batch}_img_s']:.1f} | {r[f'b{args.batch}_x_ort']:.2f} | {r['cosine']:.5f} | {r['ran']} |")
    if nncf_why:
        say(f"| OV NNCF INT8 | not run: {nncf_why} |")
    else:  # optim's fastest INT8 file on OpenVINO against NNCF's, at the large batch
        key = f"b{args.batch}_img_s"
        best = max((r for r in rows if r["model"].startswith("OV optim INT8")), key=lambda r: r[key])
        nncf_row = next(r for r in rows if r["model"] == "OV NNCF INT8")
        say(f"\noptim's best INT8 on OpenVINO: {best['model']}, {best[key]:.1f} img/s at batch {args.batch} = "
            f"{best[key] / nncf_row[key]:.2f}x NNCF INT8 ({nncf_row[key]:.1f} img/s); batch 1 p50 "
            f"{nncf_row['b1_p50_ms'] / best['b1_p50_ms']:.2f}x")
    say("")
    say(f"held-out outputs: {len(held_out)} inputs; the FP32 reference predicts {distinct} distinct classes "
        "on them" + (" (random weights: top-1 agreement says little, the cosine is the fidelity measure)"
                     if distinct <= 2 else ""))
    for r in rows:
        say(f"{r['model']}: {r['method']}" + (f" [note: {r['note']}]" if r["note"] else ""))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.as_dict(), "threads": args.threads, "data": data_desc,
                                         "rows": rows, "nncf_not_run": nncf_why}, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
