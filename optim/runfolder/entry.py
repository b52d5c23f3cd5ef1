"""One entry of a run, and the one place its names are made and parsed.

An entry's *tag* names its model file and its results: ``fp32``, ``fp16``, ``bf16``,
``int8-tensorrt``, ``int8-onnxruntime``, ``fp8-tensorrt`` (``QuantizeSettings.tag``), and
``<tag>-nobudget``: a budgeted entry's model before its accuracy budget, kept as a comparison
(not gated, not deployed). A *result name* adds the CPU backend family a result ran on when it
is not the first one (``int8-tensorrt@openvino``); a *sized name* adds the ``bench.sizes`` label
the result was timed at (``640/int8-tensorrt@openvino``, the keys of run.json ``size_not_run``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from optim.errors import InputError

#: the suffix of an entry's model before its accuracy budget (a comparison: not gated, not deployed)
NOBUDGET = "-nobudget"
#: what the report shows for a number that was not measured
NOT_RUN = "not run"
#: the first CPU backend family (``optim.backends.cpu``): its results keep their plain names
PRIMARY = "onnxruntime"
#: precisions whose tag names the target the file is placed for (``optim.settings.QUANTIZED``)
QUANTIZED = ("int8", "fp8")
_SIZE = re.compile(r"^\d+(x\d+)?$")


def is_size(text: str) -> bool:
    """Whether ``text`` is an input-size label (``640``, ``480x640``), as in ``TAG@SIZE`` and ``SIZE/TAG``."""
    return bool(_SIZE.match(text))


@dataclass(frozen=True)
class Entry:
    """One row of a run: ``precision`` (fp32, int8, ...), ``target`` (tensorrt/onnxruntime for
    INT8/FP8, else None), ``budget`` (False: the ``-nobudget`` comparison), ``backend`` (the CPU
    family a result ran on) and ``size`` (a ``bench.sizes`` label, None at the recipe's size)."""

    precision: str
    target: str | None = None
    budget: bool = True
    backend: str = PRIMARY
    size: str | None = None

    # -- making ---------------------------------------------------------------------------
    @classmethod
    def of(cls, settings, *, budget: bool = True, backend: str = PRIMARY, size: str | None = None) -> Entry:
        """From a ``QuantizeSettings`` (or anything with ``precision`` and ``target``)."""
        target = getattr(settings, "target", None) if settings.precision in QUANTIZED else None
        return cls(settings.precision, target, budget, backend, size)

    @classmethod
    def parse(cls, text: str) -> Entry:
        """``[SIZE/]TAG[@family]`` -> Entry; the inverse of ``tag``, ``result_name`` and ``sized_name``.

        A tag optim does not make (a test's ``cand``) parses too: its first ``-`` part is its
        precision and the rest its target, as the report always read it."""
        text = str(text).strip()
        size = None
        if "/" in text:
            size, _, text = text.partition("/")
            if not is_size(size):
                raise InputError(f"'{size}/{text}' is not an entry name: '{size}' is not an input size (640, 480x640)")
        tag, at, backend = text.partition("@")
        if at and not backend:
            raise InputError(f"'{text}' is not an entry name: nothing after '@'")
        if backend and is_size(backend):  # TAG@SIZE (a step name; no backend family is named like a size)
            if size is not None:
                raise InputError(f"'{text}' names two sizes")
            size, backend = backend, ""
        budget = not tag.endswith(NOBUDGET)
        base = tag if budget else tag[:-len(NOBUDGET)]
        precision, _, target = base.partition("-")
        if not precision:
            raise InputError(f"'{text}' is not an entry name (tag[@backend], e.g. int8-tensorrt@openvino)")
        return cls(precision, target or None, budget, backend or PRIMARY, size)

    def replace(self, **kw) -> Entry:
        return dataclasses.replace(self, **kw)

    # -- names ----------------------------------------------------------------------------
    @property
    def base_tag(self) -> str:
        """The tag without ``-nobudget``: the entry the recipe names."""
        return f"{self.precision}-{self.target}" if self.target else self.precision

    @property
    def tag(self) -> str:
        """The model's name in the run (``model.<tag>.onnx``, run.json ``tags``)."""
        return self.base_tag + ("" if self.budget else NOBUDGET)

    @property
    def result_name(self) -> str:
        """``TAG`` on the first CPU family, ``TAG@family`` on the others (``check/<result_name>.json``)."""
        return self.tag if self.backend == PRIMARY else f"{self.tag}@{self.backend}"

    @property
    def sized_name(self) -> str:
        """``SIZE/TAG[@family]`` (run.json ``size_not_run`` keys); the result name at the recipe's size."""
        return f"{self.size}/{self.result_name}" if self.size else self.result_name

    @property
    def step_name(self) -> str:
        """``TAG@SIZE``: the manifest name of the entry's file carried over to a size (``optim.stages.resize``)."""
        return f"{self.tag}@{self.size}" if self.size else self.tag

    def engine_name(self, target: str, *, nms: bool = False) -> str:
        """``TAG[.nms].TARGET[@SIZE]``: the manifest name of the entry's engine for ``target`` (h100, rtx),
        also its key in run.json ``engines``; ``nms``: the engine of its decode + NMS deployable."""
        name = ".".join([self.tag, *(["nms"] if nms else []), target])
        return f"{name}@{self.size}" if self.size else name

    @property
    def target_label(self) -> str:
        """The report's target column: the target (with ``-nobudget``), ``reference`` for fp32, else ``any``."""
        target = "-".join(p for p in (self.target, None if self.budget else NOBUDGET[1:]) if p)
        return target or ("reference" if self.tag == "fp32" else "any")

    @property
    def comparison(self) -> bool:
        """The ``-nobudget`` model: shown for comparison, never gated or deployed."""
        return not self.budget

    @property
    def cpu_placed(self) -> bool:
        """Placed for ONNX Runtime on a CPU (int32-bias Q/DQ TensorRT's parser refuses)."""
        return self.target == "onnxruntime"

    def __str__(self) -> str:
        return self.sized_name


def result_name(tag: str, backend: str) -> str:
    """``TAG`` or ``TAG@backend`` (``Entry.result_name`` for a tag string)."""
    return Entry.parse(tag).replace(backend=backend).result_name


def is_comparison(tag: str) -> bool:
    """Whether ``tag`` is an entry's ``-nobudget`` comparison model."""
    return Entry.parse(tag).comparison
