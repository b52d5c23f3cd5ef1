"""Model sources (torchvision / bundled / package.module:factory) and safe weight loading."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from optim.errors import ModelError
from optim.sources import BUNDLED, WEIGHTS_DIR, LoadedModel, load_model, load_state_dict, \
    trained_weights_reason
from optim.sources.fashion_resnet import FashionResNet

FACTORY = "optim.sources.fashion_resnet:FashionResNet"
BUNDLED_WEIGHTS = WEIGHTS_DIR / BUNDLED["fashion_resnet"][1]


def _reference(seed: int = 0) -> FashionResNet:
    """A FashionResNet with non-trivial BatchNorm statistics (so they must load too)."""
    torch.manual_seed(seed)
    m = FashionResNet()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))


# --------------------------------------------------------------------------- torchvision

def test_torchvision_resnet18_random_weights():
    lm = load_model("torchvision:resnet18", num_classes=7)
    assert isinstance(lm, LoadedModel)
    assert isinstance(lm.module, torch.nn.Module)
    assert not lm.module.training
    assert lm.weights is None and lm.trained is False
    assert lm.source == "torchvision:resnet18"
    with torch.no_grad():
        assert lm.module(torch.zeros(1, 3, 32, 32)).shape == (1, 7)  # kwargs were passed on


def test_trained_weights_reason_for_torchvision_without_weights():
    reason = trained_weights_reason("torchvision:resnet18", None)
    assert reason is not None
    assert "torchvision:resnet18" in reason and "random weights" in reason and "--weights" in reason


@pytest.mark.parametrize("source, weights", [
    ("torchvision:resnet18", "w.safetensors"),
    ("bundled:fashion_resnet", None),
    ("bundled:fashion_resnet", "w.pt"),
])
def test_trained_weights_reason_none_when_weights_known(tmp_path, source, weights):
    assert trained_weights_reason(source, tmp_path / weights if weights else None) is None


# --------------------------------------------------------------------------- bundled

@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(),
                    reason=f"{BUNDLED_WEIGHTS} not there yet (training in progress)")
def test_bundled_fashion_resnet_loads_trained_weights(x):
    lm = load_model("bundled:fashion_resnet")
    assert isinstance(lm.module, FashionResNet)
    assert lm.trained and lm.weights == str(BUNDLED_WEIGHTS)
    assert not lm.module.training
    with torch.no_grad():
        out = lm.module(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_bundled_with_explicit_weights(tmp_path, x):
    from safetensors.torch import save_file

    ref = _reference(1)
    save_file(ref.state_dict(), tmp_path / "mine.safetensors")
    lm = load_model("bundled:fashion_resnet", weights=tmp_path / "mine.safetensors")
    assert lm.weights == str(tmp_path / "mine.safetensors")
    with torch.no_grad():
        assert torch.equal(lm.module(x), ref(x))


# --------------------------------------------------------------------------- package.module:factory

def _save(ref: torch.nn.Module, path, how: str) -> None:
    if how == "safetensors":
        from safetensors.torch import save_file

        save_file(ref.state_dict(), str(path))
    elif how == "torch.save":
        torch.save(ref.state_dict(), path)
    else:  # a training checkpoint: {"state_dict": ..., "epoch": ...}
        torch.save({"state_dict": ref.state_dict(), "epoch": 3}, path)


@pytest.mark.parametrize("how, name", [
    ("safetensors", "w.safetensors"), ("torch.save", "w.pt"), ("checkpoint", "ckpt.pth"),
])
def test_factory_source_loads_weights_exactly(tmp_path, x, how, name):
    ref = _reference(0)
    _save(ref, tmp_path / name, how)
    torch.manual_seed(123)  # the model load_model builds starts from different random weights
    lm = load_model(FACTORY, weights=tmp_path / name)
    assert isinstance(lm.module, FashionResNet)
    assert lm.trained and lm.weights == str(tmp_path / name)
    assert not lm.module.training
    with torch.no_grad():
        expected = ref(x)
        assert torch.equal(lm.module(x), expected)
        torch.manual_seed(123)
        assert not torch.allclose(FashionResNet().eval()(x), expected)  # the weights mattered


def test_factory_without_weights_is_random_and_untrained():
    lm = load_model(FACTORY, width=8, num_classes=3)
    assert lm.weights is None and not lm.trained
    assert lm.module.fc.out_features == 3 and lm.module.fc.in_features == 32


def test_load_state_dict_returns_tensors(tmp_path):
    ref = _reference(0)
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    state = load_state_dict(tmp_path / "w.pt")
    assert set(state) == set(ref.state_dict())
    assert torch.equal(state["fc.weight"], ref.fc.weight)


@pytest.mark.parametrize("how, name", [("safetensors", "w.safetensors"), ("torch.save", "w.pt")])
def test_weights_of_wrong_shape(tmp_path, how, name):
    torch.manual_seed(0)
    _save(FashionResNet(width=16), tmp_path / name, how)
    with pytest.raises(ModelError) as ei:
        load_model(FACTORY, weights=tmp_path / name)
    msg = str(ei.value)
    assert "do not fit" in msg and name in msg and FACTORY in msg
    assert "size mismatch" in msg


def test_weights_with_missing_keys(tmp_path):
    state = _reference().state_dict()
    del state["fc.bias"]
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="do not fit") as ei:
        load_model(FACTORY, weights=tmp_path / "w.pt")
    assert "fc.bias" in str(ei.value)


def test_weights_file_missing(tmp_path):
    with pytest.raises(ModelError, match="weights file not found") as ei:
        load_model(FACTORY, weights=tmp_path / "nope.safetensors")
    assert "nope.safetensors" in str(ei.value)


def test_corrupt_safetensors(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_state_dict(tmp_path / "w.safetensors")


@pytest.mark.parametrize("obj", [[torch.zeros(2)], torch.zeros(2), {1: torch.zeros(2)}],
                         ids=["list", "tensor", "int-keys"])
def test_pt_that_is_not_a_state_dict(tmp_path, obj):
    torch.save(obj, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="does not hold a state dict"):
        load_state_dict(tmp_path / "w.pt")


def test_garbage_pt_refused(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="refused by the safe loader"):
        load_state_dict(tmp_path / "w.pt")


# --------------------------------------------------------------------------- malicious pickles

class _Payload:
    """Unpickling this calls ``open(marker, "w")``, which creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _ShellPayload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("payload_cls", [_Payload, _ShellPayload], ids=["open", "os.system"])
@pytest.mark.parametrize("fmt", ["torch.save", "raw-pickle"])
def test_malicious_pickle_never_runs(tmp_path, payload_cls, fmt):
    marker = tmp_path / "PWNED"
    evil = {"fc.weight": payload_cls(str(marker))}
    path = tmp_path / "evil.pt"
    if fmt == "torch.save":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    assert not marker.exists()  # saving did not run it

    with pytest.raises(ModelError, match="refused by the safe loader") as ei:
        load_model(FACTORY, weights=path)
    assert "evil.pt" in str(ei.value)
    assert not marker.exists(), "the pickle payload ran during load_model"

    with pytest.raises(ModelError):
        load_state_dict(path)
    assert not marker.exists()


def test_malicious_payload_is_live(tmp_path):
    """Control for the test above: an unsafe load really would create the marker."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"w": _Payload(str(marker))}, path)
    obj = torch.load(path, weights_only=False)
    obj["w"].close()
    assert marker.exists()


# --------------------------------------------------------------------------- bad sources

@pytest.mark.parametrize("source, fragment", [
    ("nope", "bad model source 'nope'"),
    ("", "bad model source"),
    ("torchvision:does_not_exist", "torchvision has no model 'does_not_exist'"),
    ("bundled:nope", "no bundled model 'nope' (bundled: fashion_resnet"),
    ("nonexistent_pkg_xyz:f", "cannot import 'nonexistent_pkg_xyz'"),
    ("optim.sources.fashion_resnet:NoSuchThing", "has no 'NoSuchThing'"),
    ("optim.sources.fashion_resnet:", "bad model source"),
    ("os:getcwd", "did not return a torch.nn.Module (got str)"),
])
def test_bad_sources(source, fragment):
    with pytest.raises(ModelError) as ei:
        load_model(source)
    assert fragment in str(ei.value)


def test_factory_that_raises():
    with pytest.raises(ModelError, match=f"model factory '{FACTORY}' failed") as ei:
        load_model(FACTORY, bogus_kwarg=1)
    assert "bogus_kwarg" in str(ei.value)


@pytest.mark.parametrize("source", ["torchvision:resnet18", "bundled:fashion_resnet"])
def test_bad_kwargs_for_torchvision_and_bundled(source):
    with pytest.raises(ModelError, match="bogus_kwarg"):
        load_model(source, bogus_kwarg=1)
