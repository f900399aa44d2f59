"""The shared training augmentation: nnU-Net's policy as MONAI transforms listed in ``train.json``
(``train#augmentations``), every probability and range read from one config key."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from monai.utils import set_determinism

from common.errors import find_input_error
from common.transforms.augmentation import DEFAULT_POLICY, rotation_range
from conftest import BUNDLE_NAMES, BUNDLES, parsed_chain


def augmentations(policy, roi_size: list[int]) -> list:
    """The transforms ``train#augmentations`` of the bundles' ``train.json`` gives for ``policy``."""
    return parsed_chain("train#augmentations", augmentation=policy, roi_size=roi_size)


def test_every_bundle_trains_with_the_same_policy_by_default() -> None:
    policies = {b: json.loads((BUNDLES / b / "configs" / "train.json").read_text())["augmentation"] for b in BUNDLE_NAMES}
    assert all(policy == DEFAULT_POLICY for policy in policies.values())


def test_none_switches_it_off_and_a_zero_probability_drops_a_transform() -> None:
    assert augmentations(None, [32, 32, 32]) == [] and augmentations(False, [32, 32, 32]) == []
    full = augmentations(DEFAULT_POLICY, [32, 32, 32])
    without_noise = augmentations({**DEFAULT_POLICY, "noise_prob": 0.0}, [32, 32, 32])
    assert len(without_noise) == len(full) - 1
    assert len(augmentations({**DEFAULT_POLICY, "mirror_axes": [0, 1, 2]}, [32, 32, 32])) == len(full) + 3


def test_a_misspelt_key_is_refused_by_name() -> None:
    policy = {**DEFAULT_POLICY, "rotate_deg": 15}
    del policy["rotate_degrees"]
    with pytest.raises(Exception) as raised:
        augmentations(policy, [32, 32, 32])
    assert "unknown keys ['rotate_deg'], missing keys ['rotate_degrees']" in str(find_input_error(raised.value))


def test_thin_patches_rotate_in_plane_only() -> None:
    assert rotation_range([64, 64, 64], 30) == [math.radians(30)] * 3
    assert rotation_range([80, 80, 16], 30) == [0.0, 0.0, math.radians(30)]


def test_spatial_augmentation_moves_the_label_with_the_image() -> None:
    """With every spatial transform on, a label equal to the image stays equal to it."""
    set_determinism(seed=3)
    label = torch.zeros(1, 24, 24, 24)
    label[0, 6:16, 8:20, 4:12] = 1
    label[0, 14:20, 3:9, 14:22] = 2
    only_spatial = {**DEFAULT_POLICY, **{k: 0.0 for k in DEFAULT_POLICY if k.endswith("_prob")}, "spatial_prob": 1.0, "mirror_axes": [0, 2]}
    moved = Compose(augmentations(only_spatial, [24, 24, 24]))({"image": label.clone(), "label": label.clone()})
    image = torch.as_tensor(moved["image"])
    assert not torch.equal(torch.as_tensor(moved["label"]), label)  # it moved
    agree = (torch.round(image) == torch.as_tensor(moved["label"])).float().mean()
    assert agree > 0.97  # bilinear vs nearest differ only on edges
    set_determinism(seed=None)


def test_intensity_augmentation_keeps_the_label_and_the_shape() -> None:
    set_determinism(seed=0)
    image = torch.as_tensor(np.random.RandomState(0).normal(size=(1, 24, 24, 24)), dtype=torch.float32)
    label = (image > 0).float()
    only_intensity = {**DEFAULT_POLICY, **{k: 1.0 for k in DEFAULT_POLICY if k.endswith("_prob")}, "spatial_prob": 0.0}
    out = Compose(augmentations(only_intensity, [24, 24, 24]))({"image": image.clone(), "label": label.clone()})
    assert torch.equal(torch.as_tensor(out["label"]), label) and out["image"].shape == image.shape
    assert not torch.allclose(torch.as_tensor(out["image"]), image)
    set_determinism(seed=None)
