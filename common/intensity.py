"""MRI intensity normalisation that a smooth receive-coil shading does not change."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform

GAUSSIAN_TRUNCATION = 3.0  # kernel radius in standard deviations


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
