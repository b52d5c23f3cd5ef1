"""TensorRT engine backend: torch device buffers, CUDA-event timing, optional CUDA graph replay.

Before anything touches the GPU, the engine's manifest (``ENGINE.json``, written by
``optim build``) is checked against this machine's TensorRT version and GPU
architecture (``optim.backends.engine_compat``); a mismatch stops with one line saying what to
rebuild. All TensorRT calls go through ``optim.backends.tensorrt_api``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optim.backends.engine_compat import engine_problem, read_manifest
from optim.errors import BackendUnavailable, ModelError
from optim.backends.machine import Gpu, Machine, cuda_gpus, gpu_missing
from optim.backends.base import Runner, TensorSpec

TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}
#: what the host hands ``infer`` (converted to the engine's type on the GPU; NumPy has no bfloat16)
HOST_DTYPES = {**TORCH_DTYPES, "BF16": "float32"}


class EngineRunner(Runner):
    name = "tensorrt"

    def __init__(self, path: Path, *, cuda_graph: bool = False, api: Any = None, gpu: Gpu | None = None) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.cuda_graph = cuda_graph
        self._api, self._gpu = api, gpu
        self.session = None
        self.method = f"TensorRT engine {self.path.name}"

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> None:
        if self._api is None:
            from optim.backends.tensorrt_api import TensorRT

            self._api = TensorRT.load()
        api = self._api
        gpu = self._gpu
        if gpu is None:
            _, gpus, err = cuda_gpus()
            if not gpus:
                raise BackendUnavailable(f"cannot run {self.path.name}: {gpu_missing(Machine(cuda_error=err))}")
            gpu = gpus[0]
        problem = engine_problem(self.manifest, api.version, gpu)
        if problem:
            raise BackendUnavailable(f"{self.path.name}: {problem}")
        api.load_plugins([Path(p["path"]) for p in self.manifest.get("plugins", [])])
        plan = self.manifest.get("plan", {})
        engine = api.deserialize(self.path.read_bytes(), host_code=bool(plan.get("version_compatible")),
                                 what=str(self.path))
        self.session = api.session(engine)
        inputs = [t for t in self.session.io if t.is_input]
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: optim runs single-input engines, this one has {len(inputs)}")
        self.input = inputs[0]
        self.min_batch, self.max_batch = self.input.profile[0][0], self.input.profile[2][0]
        import torch

        self._torch = torch
        self.device = torch.device("cuda", gpu.index)
        self.stream = torch.cuda.Stream(self.device)
        typing = "strongly typed" if plan.get("strongly_typed") else "builder flags " + "+".join(plan.get("flags_on", []))
        self.method = (f"TensorRT {api.version} engine on {gpu.name} ({gpu.sm}), {plan.get('precision', '?')} "
                       f"{typing}, batch profile {self.min_batch}..{self.max_batch}")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self._sess().io if t.is_input]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self._sess().io if not t.is_input]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.input.profile[1][1:])

    def input_spec(self) -> TensorSpec:
        self._sess()
        if self.input.dtype not in HOST_DTYPES:
            raise ModelError(f"{self.path}: tensor type {self.input.dtype} has no host equivalent")
        return TensorSpec(self.input.name, self.sample_shape, np.dtype(HOST_DTYPES[self.input.dtype]))

    # -- running -----------------------------------------------------------------------------
    def _dtype(self, trt_name: str):
        if trt_name not in TORCH_DTYPES:
            raise ModelError(f"{self.path}: tensor type {trt_name} has no host equivalent")
        return getattr(self._torch, TORCH_DTYPES[trt_name])

    def _bind(self, x) -> dict[str, Any]:
        """Set the input shape, bind ``x`` and freshly allocated outputs; return the outputs."""
        sess, torch = self._sess(), self._torch
        b = x.shape[0]
        if not self.min_batch <= b <= self.max_batch:
            raise ModelError(f"batch {b} is outside the engine's profile {self.min_batch}..{self.max_batch}; "
                             "rebuild with a wider input.batch range")
        sess.set_input_shape(self.input.name, tuple(x.shape))
        sess.bind(self.input.name, x.data_ptr())
        outs = {}
        for t in sess.io:
            if not t.is_input:
                outs[t.name] = torch.empty(sess.tensor_shape(t.name), dtype=self._dtype(t.dtype), device=self.device)
                sess.bind(t.name, outs[t.name].data_ptr())
        return outs

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            xin = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._dtype(self.input.dtype))
            outs = self._bind(xin)
            self._sess().enqueue(self.stream.cuda_stream)
            self.stream.synchronize()
            return {k: (v.float() if v.dtype == torch.bfloat16 else v).cpu().numpy() for k, v in outs.items()}

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds[self.input.name]
        parts = [self._run(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def measure(self, batch: int, warmup: int, iterations: int, *,
                on_run: Callable[[], None] | None = None) -> list[float]:
        """Seconds of device time per run between CUDA events, input already on the GPU."""
        torch, sess = self._torch, self._sess()
        tick = on_run or (lambda: None)
        host = self.input_spec().random(batch)
        with torch.cuda.stream(self.stream):
            x = torch.from_numpy(host).to(self.device).to(self._dtype(self.input.dtype))
            outs = self._bind(x)  # held until the timing ends: TensorRT writes into these buffers
            step = lambda: sess.enqueue(self.stream.cuda_stream)  # noqa: E731
            for i in range(max(warmup, 1)):  # one run before any capture lets TensorRT settle shapes
                step()
                if i < warmup:
                    tick()
            if self.cuda_graph:
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    step()
                step = graph.replay
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(iterations)]
            for start, end in events:
                start.record(self.stream)
                step()
                end.record(self.stream)
                tick()
            self.stream.synchronize()
        del outs
        return [start.elapsed_time(end) / 1e3 for start, end in events]

    @property
    def timing_method(self) -> str:
        return ("device time between CUDA events around each execute_async_v3, input already on the GPU, "
                f"CUDA graph replay {'on' if self.cuda_graph else 'off'}")
