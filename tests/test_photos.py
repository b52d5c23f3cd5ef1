"""The natural-photo data set: real photographs from scikit-image, deterministic variants."""

from __future__ import annotations

import numpy as np
import pytest

from optim.data import load_dataset, parse_data_arg
from optim.data.photos import base_photos, natural_photos
from optim.errors import DataError
from optim.settings import DataSpec


def test_photos_are_real_and_deterministic():
    a = natural_photos(40, seed=0, size=64)
    assert a.shape == (40, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, natural_photos(40, seed=0, size=64))
    assert not np.array_equal(a, natural_photos(40, seed=1, size=64))
    assert len({im.tobytes() for im in a}) == 40  # every variant differs
    assert a.std() > 20  # photographs, not flat fills
    assert len(base_photos()) >= 15


def test_photos_data_spec_and_cli_form():
    ds = load_dataset(DataSpec(kind="photos", count=5, seed=3), (3, 224, 224))
    assert len(ds) == 5 and ds.labels is None and "seed 3" in ds.source
    assert parse_data_arg("photos:12") == DataSpec(kind="photos", count=12)
    with pytest.raises(DataError, match="photos:N"):
        parse_data_arg("photos:many")
    with pytest.raises(ValueError, match="needs a 'count'"):
        DataSpec(kind="photos")


def test_pretrained_efficientnet_classifies_the_cat():
    """The shipped ImageNet weights are real: the cat photo is a cat, the cup is espresso."""
    import torch
    import torchvision

    from optim.data.preprocess import preprocess
    from optim.settings import Preprocess
    from optim.sources import load_model

    m = load_model("pretrained:efficientnet_lite0")
    assert m.trained
    pp = Preprocess(color="rgb", resize=256, crop=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.from_numpy(preprocess(natural_photos(2, seed=0), pp))  # chelsea the cat, coffee
    with torch.no_grad():
        top = m.module(x).argmax(1).tolist()
    names = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert "cat" in names[top[0]] and names[top[1]] == "espresso"
