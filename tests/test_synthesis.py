"""Training images synthesised from label maps: the per-label sampler against its configured ranges,
the chain of ``train.json`` (labels untouched, moved with the image by the spatial augmentation), and
one policy object for every bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from monai.utils import set_determinism

from common.errors import InputError, find_input_error
from common.transforms.augmentation import DEFAULT_POLICY
from common.transforms.synthesis import (DEFAULT_SYNTHESIS, RandThickSlicesd, SynthesizeFromLabelsd, checked_synthesis,
                                         generation_labels)
from conftest import BUNDLE_NAMES, BUNDLES, parsed_chain

MRI = {"mode": "percentile", "lower": 0.5, "upper": 99.5}
AFFINE = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))


def blocks(classes: int = 4, size: int = 24) -> tuple[MetaTensor, MetaTensor]:
    """An image with texture, zero in a border, and a label map of ``classes`` slabs inside it."""
    label = torch.zeros(1, size, size, size)
    for c in range(classes):
        label[0, c * size // classes:(c + 1) * size // classes] = c
    image = torch.rand(1, size, size, size) + 0.5
    image[:, :, :2] = 0  # outside a brain-extracted scan
    return MetaTensor(image, affine=AFFINE), MetaTensor(label, affine=AFFINE)


def test_each_generation_label_gets_an_intensity_within_the_configured_ranges() -> None:
    """Over many draws, every label's voxels are Gaussian with a mean in ``mean`` and a standard
    deviation in ``std`` (SynthSeg's 25-225 and 5-25), drawn anew each time; zero stays zero."""
    image, label = blocks()
    sampler = SynthesizeFromLabelsd("image", mean=(25.0, 225.0), std=(5.0, 25.0), bands=1)
    sampler.set_random_state(0)
    means, stds = [], []
    for _ in range(50):
        out = sampler({"image": image, "label": label})
        synthetic = torch.as_tensor(out["image"])[0]
        assert torch.equal(synthetic[:, :2], torch.zeros_like(synthetic[:, :2])) and bool((synthetic[:, 2:] > 0).all())
        assert torch.equal(torch.as_tensor(out["synthesis_mask"]), torch.as_tensor(image) != 0)
        for c in range(4):
            values = synthetic[:, 2:][torch.as_tensor(label)[0][:, 2:] == c]
            means.append(float(values.mean()))
            stds.append(float(values.std()))
    means, stds = np.array(means), np.array(stds)
    assert means.min() > 25 - 2 and means.max() < 225 + 2 and means.max() - means.min() > 150  # spread over the range
    assert stds.min() > 5 * 0.9 and stds.max() < 25 * 1.1 and stds.max() - stds.min() > 12
    assert len(set(np.round(means[:4], 3))) == 4  # one draw per label


def test_bands_split_each_class_by_the_images_intensity() -> None:
    image, label = blocks(classes=2)
    generation = generation_labels(torch.as_tensor(image), torch.as_tensor(label), bands=3)
    assert bool((generation[:, :2] == -1).all())
    for c in range(2):
        inside = (torch.as_tensor(label)[0] == c) & (torch.as_tensor(image)[0] != 0)
        counts = torch.bincount(generation[inside] - 3 * c, minlength=3)
        assert counts.numel() == 3 and counts.min() > 0.3 * inside.sum() and counts.max() < 0.37 * inside.sum()
        brightest = torch.as_tensor(image)[0][inside][generation[inside] == 3 * c + 2].min()
        assert brightest >= torch.as_tensor(image)[0][inside][generation[inside] == 3 * c].max()


def synthesis_chain(**settings) -> Compose:
    """``train#synthesis`` of the bundles' ``train.json``: the whole image made synthetic beside the real one."""
    chain = parsed_chain("train#synthesis", normalization=MRI, synthesis={**DEFAULT_SYNTHESIS, "prob": 1.0, **settings})
    assert len(chain) == 1 and isinstance(chain[0], Compose)
    return chain[0]


def test_the_chain_writes_a_synthetic_image_and_never_changes_the_label() -> None:
    set_determinism(seed=1)
    image, label = blocks()
    chain = synthesis_chain(bias_field_prob=1.0, low_resolution_prob=1.0, thick_slice_prob=1.0)
    for _ in range(5):
        out = chain({"image": image.clone(), "label": label.clone()})
        assert sorted(out) == ["image", "label", "synthetic_image"]
        assert torch.equal(torch.as_tensor(out["label"]), torch.as_tensor(label)) and torch.equal(out["label"].affine, label.affine)
        assert torch.equal(torch.as_tensor(out["image"]), torch.as_tensor(image))  # the real image is kept for the real crops
        synthetic = torch.as_tensor(out["synthetic_image"])
        assert synthetic.shape == image.shape and torch.equal(out["synthetic_image"].affine, image.affine)
        assert float(synthetic.min()) >= 0 and float(synthetic.max()) <= 1 and not torch.allclose(synthetic, torch.as_tensor(image))
        assert bool((synthetic[:, :, :2] == 0).all())  # the background stays zero, whatever blurred into it
    set_determinism(seed=None)


def test_each_crop_is_synthetic_or_real_so_that_a_batch_mixes_both() -> None:
    """The training chain crops the synthetic image with the real one; each crop then keeps one of
    them (``prob`` synthetic), and the synthetic image never leaves the chain."""
    set_determinism(seed=2)
    image, label = blocks(size=40)
    chain = Compose(parsed_chain("train#preprocessing", normalization=MRI, augmentation=None, roi_size=[16, 16, 16], num_samples=4,
                                 synthesis={**DEFAULT_SYNTHESIS, "prob": 0.5})[8:])  # after the loading chain
    real_values = torch.unique(torch.as_tensor(image))
    kinds = []
    for _ in range(6):
        crops = chain({"image": image.clone(), "label": label.clone()})
        assert len(crops) == 4 and all(sorted(crop) == ["image", "label"] for crop in crops)
        kinds.append({bool(torch.isin(torch.as_tensor(crop["image"]), real_values).all()) for crop in crops})
    assert {True, False} in kinds  # a batch of real and synthetic crops
    set_determinism(seed=None)


def test_the_spatial_augmentation_moves_the_label_with_the_synthetic_image() -> None:
    """A synthetic image whose labels each have one intensity, then every spatial augmentation: the
    intensity still says the label almost everywhere (bilinear against nearest, at edges only)."""
    set_determinism(seed=3)
    image, label = blocks()
    sampler = SynthesizeFromLabelsd("image", mean=(50.0, 50.0), std=(0.0, 0.0), bands=1)
    synthetic = sampler({"image": MetaTensor(torch.ones_like(image), affine=AFFINE), "label": label})["image"]
    coded = MetaTensor(torch.as_tensor(synthetic) / 50.0 * (torch.as_tensor(label) + 1), affine=AFFINE)  # label + 1, as intensity
    only_spatial = {**DEFAULT_POLICY, **{k: 0.0 for k in DEFAULT_POLICY if k.endswith("_prob")}, "spatial_prob": 1.0, "mirror_axes": [0, 2]}
    moved = Compose(parsed_chain("train#augmentations", augmentation=only_spatial, roi_size=[24, 24, 24]))({"image": coded, "label": label.clone()})
    assert not torch.equal(torch.as_tensor(moved["label"]), torch.as_tensor(label))
    inside = torch.as_tensor(moved["image"]) > 0.5
    agree = (torch.round(torch.as_tensor(moved["image"]))[inside] - 1 == torch.as_tensor(moved["label"])[inside]).float().mean()
    assert agree > 0.95
    set_determinism(seed=None)


def test_thick_slices_average_along_one_axis_only() -> None:
    x = torch.arange(24.0).view(1, 24, 1, 1).expand(1, 24, 24, 24).contiguous()  # varies along the first axis only
    thick = RandThickSlicesd("image", prob=1.0, factor_range=(4.0, 4.0))
    for seed in range(6):
        thick.set_random_state(seed)
        out = torch.as_tensor(thick({"image": x.clone()})["image"])
        if thick.axis == 0:  # slabs of 4 averaged, then linear back: the ramp is kept away from the edges
            torch.testing.assert_close(out[0, 4:20], x[0, 4:20], atol=1e-4, rtol=0)
            assert not torch.allclose(out[0, :2], x[0, :2])
        else:  # nothing varies along that axis: nothing changes
            torch.testing.assert_close(out, x)


def test_the_policy_is_one_object_in_every_bundle() -> None:
    policies = [json.loads((BUNDLES / b / "configs" / "train.json").read_text())["synthesis"] for b in BUNDLE_NAMES]
    assert all(policy == DEFAULT_SYNTHESIS for policy in policies)
    demos = [json.loads((BUNDLES / b / "configs" / "demo.json").read_text()).get("synthesis") for b in BUNDLE_NAMES]
    assert all(demo == demos[0] for demo in demos)


def test_off_leaves_the_training_chain_as_it_was_and_a_bad_policy_is_named() -> None:
    kinds = lambda **settings: [type(t).__name__ for t in parsed_chain("train#preprocessing", **settings)]
    assert "RandSyntheticImaged" in kinds(normalization=MRI)
    assert "RandSyntheticImaged" not in kinds(synthesis=None) and "RandSyntheticImaged" not in kinds(synthesis=False)
    with pytest.raises(InputError, match="missing keys \\['gamma'\\]"):
        checked_synthesis({k: v for k, v in DEFAULT_SYNTHESIS.items() if k != "gamma"}, MRI)
    with pytest.raises(InputError, match="mean \\[200, 100\\] is not a range"):
        checked_synthesis({**DEFAULT_SYNTHESIS, "mean": [200, 100]}, MRI)
    ct = {"mode": "ct", "clip": [-100.0, 900.0], "mean": 200.0, "std": 150.0}
    with pytest.raises(Exception) as raised:
        parsed_chain("train#preprocessing", normalization=ct)
    assert "set synthesis to null" in str(find_input_error(raised.value))
    assert "RandSyntheticImaged" not in kinds(normalization=ct, synthesis=None)
