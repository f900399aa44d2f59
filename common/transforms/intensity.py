"""Intensity normalisation: the modes a config's ``normalization`` chooses between (the configs list
each mode's MONAI transforms and enable the chosen one), and an MRI normalisation that a smooth
receive-coil shading does not change."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform

from common.errors import InputError

GAUSSIAN_TRUNCATION = 3.0  # kernel radius in standard deviations
# Each mode and what it does, its keys in braces (a model card's ``image_classes`` fills them in).
NORMALIZATIONS = {
    "percentile": "intensities scaled per image from the {lower}th-{upper}th percentile to [0, 1] (MRI)",
    "ct": "intensities clipped to {clip} and z-scored with mean {mean} and std {std} (CT)",
    "local_ratio": "each intensity divided by the mean of its non-zero neighbourhood (Gaussian, {sigma_mm} mm; MRI with coil shading)",
}


def normalization_mode(normalization: Mapping[str, Any]) -> str:
    """The mode of a config's ``normalization``, once its keys are checked; the configs' loading
    chains enable the transforms of that mode:

    - ``{"mode": "percentile", "lower": 0.5, "upper": 99.5}``: per image and channel, those
      percentiles mapped to 0 and 1, clipped (``ScaleIntensityRangePercentilesd``; MRI, the default);
    - ``{"mode": "ct", "clip": [low, high], "mean": m, "std": s}``: clipped to ``[low, high]``, then
      ``(x - m) / s`` with the data set's foreground statistics (``ScaleIntensityRanged``; nnU-Net's
      CT rule, ``python -m common plan`` measures them);
    - ``{"mode": "local_ratio", "sigma_mm": 20}``: per image and channel, each voxel over the mean of
      its non-zero neighbourhood (:class:`LocalRatioNormalized`; brain-extracted MRI).

    Raises:
        InputError: an unknown mode, or a missing or impossible value, naming the setting.
    """
    mode = normalization.get("mode")
    if mode not in NORMALIZATIONS:
        raise InputError(f"normalization {dict(normalization)}: unknown mode {mode!r}; modes: {NORMALIZATIONS}")
    try:
        if mode == "percentile":
            float(normalization["lower"]), float(normalization["upper"])
        elif mode == "ct":
            low, high = (float(v) for v in normalization["clip"])
            mean, std = float(normalization["mean"]), float(normalization["std"])
            if not (low < high and std > 0):
                raise ValueError(f"needs clip low < high and std > 0, got clip {[low, high]} and std {std}")
        else:
            sigma_mm = float(normalization["sigma_mm"])
            if not sigma_mm > 0:
                raise ValueError(f"sigma_mm must be positive, got {sigma_mm}")
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"normalization {dict(normalization)}: {err}; modes: {NORMALIZATIONS}") from err
    return mode


def describe_normalization(normalization: Mapping[str, Any]) -> str:
    """One phrase for a model card's ``image_classes``: what ``normalization`` does to the intensities."""
    return NORMALIZATIONS[normalization["mode"]].format(**normalization)


def local_ratio(image: torch.Tensor, spacing: tuple[float, ...], sigma_mm: float) -> torch.Tensor:
    """Each non-zero voxel divided by the Gaussian-weighted mean (standard deviation ``sigma_mm``)
    of the non-zero voxels around it; zero stays zero.

    A multiplicative field that varies slowly over ``sigma_mm`` (MRI bias field) and a global
    intensity scale cancel out; tissue contrast over shorter distances stays. The local mean is a
    normalised convolution (``G * x / G * mask``), so background outside a brain-extracted scan does
    not darken the edge of the brain.

    Args:
        image: ``(C, D, H, W)``, non-negative intensities; each channel is normalised on its own.
        spacing: voxel size in mm, one value per spatial axis.
        sigma_mm: standard deviation of the Gaussian in mm.

    Returns:
        ``(C, D, H, W)`` float32: about 1 for a voxel as bright as its neighbourhood.
    """
    smooth = GaussianFilter(3, sigma=[sigma_mm / s for s in spacing], truncated=GAUSSIAN_TRUNCATION)
    x = image.float().clamp_min(0).unsqueeze(1)
    inside = x > 0
    local_mean = smooth(x) / smooth(inside.float()).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(inside, x / local_mean.clamp_min(torch.finfo(torch.float32).tiny), 0.0).squeeze(1)


class LocalRatioNormalized(MapTransform):
    """:func:`local_ratio` of ``keys`` (``(C, D, H, W)`` MetaTensors on their resampled grid, whose
    ``pixdim`` gives the voxel size), metadata kept.

    Args:
        keys: keys of the images to normalise.
        sigma_mm: standard deviation of the local mean's Gaussian in mm: longer than anatomy
            (cortex, gyri: a few mm), shorter than a receive coil's shading (tens of cm).
    """

    def __init__(self, keys: KeysCollection, sigma_mm: float) -> None:
        super().__init__(keys)
        if not sigma_mm > 0:
            raise ValueError(f"sigma_mm must be positive, got {sigma_mm}")
        self.sigma_mm = float(sigma_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, MetaTensor):
                raise TypeError(f"{key}: needs a MetaTensor, whose affine gives the voxel size; got {type(image).__name__}")
            normalised = local_ratio(image.as_tensor(), tuple(float(s) for s in image.pixdim), self.sigma_mm)
            d[key] = MetaTensor(normalised, meta=image.meta, applied_operations=image.applied_operations)
        return d
