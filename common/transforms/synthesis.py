"""Training images synthesised from label maps (SynthSeg, Billot et al. 2023): every generation label
gets a random Gaussian intensity, so that a network learns shapes and context instead of one scan's
grey values. ``train#synthesis`` in every bundle's ``train.json`` lists the chain, run on the whole
training image before it is cropped (a coil shades a whole scan): the per-label sampler below,
MONAI's blur (partial volume), bias field and isotropic low resolution, the one-axis low resolution
(thick slices) MONAI has no transform for, noise, the background set back to zero, the percentile
normalisation every scan gets, and gamma. The synthetic image is cropped with the real one, and
each crop is then synthetic with probability ``prob`` (``train#synthetic_crops``), so that a batch
mixes both. Every probability and range is a key of the config's ``synthesis`` dict."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from common.errors import InputError
from common.transforms.augmentation import checked_keys

# SynthSeg's generative ranges (intensities on a 0-255 scale, before normalisation), its bias field
# and its resolutions, the last two relative to the network's voxel (2 mm for the brain): isotropic
# down to half the resolution (SynthSeg: up to 4 mm at 1 mm would blur a 2 mm grid beyond the
# anatomy's scale), one axis up to 4 times coarser (8 mm slices on the 2 mm grid). One crop in five
# is synthetic; what other shares cost, and why the CPU demos train without it: docs/robustness.md.
DEFAULT_SYNTHESIS: dict[str, Any] = {
    "prob": 0.2,
    "bands": 3,
    "mean": [25.0, 225.0],
    "std": [5.0, 25.0],
    "blur_sigma": [0.0, 1.0],
    "bias_field_prob": 0.8,
    "bias_field_coeff": 0.5,
    "low_resolution_prob": 0.25,
    "low_resolution_zoom": [0.5, 1.0],
    "thick_slice_prob": 0.25,
    "thick_slice_factor": [1.5, 4.0],
    "noise_std": 10.0,
    "gamma": [0.5, 2.0],
}


def checked_synthesis(synthesis: Mapping[str, Any] | bool | None, normalization: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``synthesis`` policy (keys as in :data:`DEFAULT_SYNTHESIS`), checked, for the
    transforms ``train#synthesis`` lists; ``None`` (``null``) or ``False`` switches it off
    (probability 0). The synthetic image is normalised as the ``percentile`` mode normalises a
    scan, so another ``normalization`` is refused while synthesis is on.

    Raises:
        InputError: a missing or unknown key, an impossible range, or another normalisation, by name.
    """
    if synthesis is None or synthesis is False:
        return {**DEFAULT_SYNTHESIS, "prob": 0.0}
    policy = checked_keys("synthesis", synthesis, DEFAULT_SYNTHESIS)
    for key in ("mean", "std", "blur_sigma", "low_resolution_zoom", "thick_slice_factor", "gamma"):
        low, high = (float(v) for v in policy[key])
        if not 0 <= low <= high:
            raise InputError(f"synthesis: {key} {policy[key]} is not a range [low, high] with 0 <= low <= high")
    if not 0 <= float(policy["prob"]) <= 1 or int(policy["bands"]) < 1:
        raise InputError(f"synthesis: prob {policy['prob']} must be in [0, 1] and bands {policy['bands']} at least 1")
    if policy["prob"] > 0 and normalization.get("mode") != "percentile":
        raise InputError(f"synthesis: synthetic images are normalised as the 'percentile' mode does; with normalization "
                         f"{dict(normalization)} set synthesis to null")
    return policy


def plain(volume: Any) -> torch.Tensor:
    """``volume`` as a plain tensor (a ``MetaTensor``'s data without its metadata tracking)."""
    return volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)


def like(original: Any, values: torch.Tensor) -> Any:
    """``values`` with the metadata of ``original`` when it is a ``MetaTensor``."""
    return MetaTensor(values, meta=original.meta, applied_operations=original.applied_operations) if isinstance(original, MetaTensor) else values


def generation_labels(image: torch.Tensor, label: torch.Tensor, bands: int) -> torch.Tensor:
    """The labels intensities are drawn for: each class of ``label`` ``(1, D, H, W)`` split into
    ``bands`` bands of equal size by the intensity quantiles of ``image`` ``(C, D, H, W)`` (its first
    channel) within that class, so that partial volume and the darker and brighter parts of a class
    (ventricles and sulci, deep and cortical grey matter) get intensities of their own. Voxels where
    every channel of ``image`` is zero (outside a brain-extracted scan) are ``-1``.

    Returns:
        ``(D, H, W)`` int64: ``class * bands + band``, or ``-1``.
    """
    classes = label[0].long()
    generation = torch.full_like(classes, -1)
    inside = (image != 0).any(dim=0)
    for value in torch.unique(classes[inside]).tolist():
        where = inside & (classes == value)
        band = torch.zeros(int(where.sum()), dtype=torch.long)
        if bands > 1:
            values = image[0][where].float()
            edges = torch.quantile(values[:: max(1, values.numel() // 2**20) or 1], torch.linspace(0, 1, bands + 1)[1:-1])
            band = torch.bucketize(values, edges)
        generation[where] = value * bands + band
    return generation


class SynthesizeFromLabelsd(RandomizableTransform, MapTransform):
    """Replace the image with one drawn from its label map: every generation label
    (:func:`generation_labels`) gets, per channel, a mean from ``mean`` and a standard deviation from
    ``std`` (uniform), and each of its voxels a Gaussian sample of them, kept positive; voxels where
    the image is zero in every channel stay zero (a brain-extracted scan's background), and their
    mask is kept under ``mask_key`` for the chain's last steps. The label is not changed.

    Args:
        keys: the image ``(C, D, H, W)``, normalised (its quantiles split the classes).
        label_key: the label map ``(1, D, H, W)``.
        mean: range of the generation labels' means (SynthSeg: 25 to 225).
        std: range of their standard deviations (SynthSeg: 5 to 25).
        bands: generation labels per class.
        mask_key: where the mask of the non-zero voxels goes.
        synthetic_key: where the synthetic image goes (``None``: in place of the image).
    """

    def __init__(self, keys: KeysCollection, label_key: str = "label", mean: Sequence[float] = (25.0, 225.0),
                 std: Sequence[float] = (5.0, 25.0), bands: int = 1, mask_key: str = "synthesis_mask", synthetic_key: str | None = None) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys)
        self.label_key, self.mask_key, self.synthetic_key = label_key, mask_key, synthetic_key
        self.mean, self.std, self.bands = tuple(float(v) for v in mean), tuple(float(v) for v in std), int(bands)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = plain(d[self.label_key])
        for key in self.key_iterator(d):
            image = d[key]
            values = plain(image)
            generation = generation_labels(values, label, self.bands)
            count = int(generation.max()) + 1
            means = torch.as_tensor(self.R.uniform(*self.mean, size=(values.shape[0], max(count, 1))), dtype=torch.float32)
            stds = torch.as_tensor(self.R.uniform(*self.std, size=(values.shape[0], max(count, 1))), dtype=torch.float32)
            noise = torch.as_tensor(self.R.standard_normal(size=tuple(values.shape)), dtype=torch.float32)
            inside = generation >= 0
            index = generation.clamp_min(0)
            synthetic = (means[:, index] + stds[:, index] * noise).clamp_min(1.0) * inside
            d[self.synthetic_key or key] = like(image, synthetic)
            d[self.mask_key] = inside[None]
        return d


class RandThickSlicesd(RandomizableTransform, MapTransform):
    """Thick slices along one random axis: the image averaged over ``factor`` voxels along it
    (``factor`` from ``factor_range``), then linearly interpolated back to its grid, as a scan
    acquired with thick slices and resampled looks; the other axes keep their resolution (MONAI's
    ``RandSimulateLowResolution`` coarsens all three). Metadata and grid are kept.

    Args:
        keys: images ``(C, D, H, W)``.
        prob: probability of thick slices.
        factor_range: how many voxels a slice spans, at least 1.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.1, factor_range: Sequence[float] = (1.5, 4.0)) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.factor_range = tuple(float(v) for v in factor_range)
        self.axis, self.factor = 0, 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.axis = int(self.R.randint(3))
        self.factor = float(self.R.uniform(*self.factor_range))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            values = plain(image).float()[None]
            shape = list(values.shape[2:])
            coarse = list(shape)
            coarse[self.axis] = max(1, round(shape[self.axis] / self.factor))
            thick = F.interpolate(F.adaptive_avg_pool3d(values, coarse), size=shape, mode="trilinear", align_corners=False)[0]
            d[key] = like(image, thick)
        return d


class RandSyntheticImaged(RandomizableTransform, MapTransform):
    """Per training crop: with probability ``prob`` its synthetic image (cropped with it) takes the
    real image's place; the synthetic image leaves the data either way. Applied to each crop on its
    own, so that a batch mixes real and synthetic crops (MONAI's ``OneOf`` chooses once for all the
    crops of an image).

    Args:
        keys: the image key.
        synthetic_key: the key of the synthetic image.
        prob: probability of the synthetic image.
    """

    def __init__(self, keys: KeysCollection, synthetic_key: str = "synthetic_image", prob: float = 0.5) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.synthetic_key = synthetic_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        synthetic = d.pop(self.synthetic_key)
        if self._do_transform:
            for key in self.key_iterator(d):
                d[key] = synthetic
        return d
