"""The collection's training augmentation: nnU-Net's family of spatial and intensity augmentations
and an MRI bias field, built from MONAI transforms, with every probability and range a key of one
config dict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from monai.transforms import (
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSimulateLowResolutiond,
)

from common.errors import InputError

# nnU-Net v2's default training augmentation (nnUNetTrainer), as the configs' ``augmentation`` shows
# it, and a smooth multiplicative bias field, the receive-coil shading of MRI that nnU-Net leaves out
# (``python -m common plan`` switches it off for CT, whose intensities are calibrated). The field is
# TorchIO's RandomBiasField (a degree-3 polynomial in the exponent) drawn over each crop: with
# coefficients in [-0.25, 0.25] it varies across a crop about as much as TorchIO's default whole-image
# field (coefficients in [-0.5, 0.5]) varies across a crop of half the image's extent.
DEFAULT_POLICY: dict[str, Any] = {
    "spatial_prob": 0.2,
    "rotate_degrees": 30.0,
    "scale": [0.7, 1.4],
    "mirror_axes": [],
    "noise_prob": 0.1,
    "noise_std": 0.1,
    "blur_prob": 0.2,
    "blur_sigma": [0.5, 1.0],
    "brightness_prob": 0.15,
    "brightness": [0.75, 1.25],
    "contrast_prob": 0.15,
    "contrast": [0.75, 1.25],
    "low_resolution_prob": 0.25,
    "low_resolution_zoom": [0.5, 1.0],
    "gamma_prob": 0.3,
    "inverted_gamma_prob": 0.1,
    "gamma": [0.7, 1.5],
    "bias_field_prob": 0.3,
    "bias_field_coeff": 0.25,
}
BIAS_FIELD_DEGREE = 3
ANISOTROPIC_PATCH = 3.0  # nnU-Net: a patch this much longer than its short axis is rotated in-plane only


def rotation_range(roi_size: Sequence[int], degrees: float) -> list[float]:
    """Rotation range in radians about each axis: all three, or only about the short axis of a
    patch more than ``ANISOTROPIC_PATCH`` times longer than it is short (nnU-Net's in-plane
    augmentation of thin patches, whose corners would otherwise rotate out of the patch)."""
    radians = math.radians(degrees)
    if max(roi_size) < ANISOTROPIC_PATCH * min(roi_size):
        return [radians] * 3
    short = min(range(3), key=lambda axis: roi_size[axis])
    return [radians if axis == short else 0.0 for axis in range(3)]


def augmentations(policy: Mapping[str, Any] | bool | None, roi_size: Sequence[int], keys: Sequence[str] = ("image", "label")) -> list[MapTransform]:
    """The random transforms of ``policy`` (keys as in :data:`DEFAULT_POLICY`), for crops of
    ``roi_size`` of ``image`` (``(C, D, H, W)``, normalised) and ``label``; ``None`` (``null`` in a
    config) or ``False`` (``--augmentation False`` on the command line, where MONAI drops a
    ``None``) switches augmentation off. Spatial transforms move the label with the image (nearest neighbour); the
    others change the image only. The bias field multiplies the crop (an intensity-normalised MRI,
    background 0), drawn over the crop's extent. A probability of 0 leaves its transform out.

    Raises:
        InputError: a policy key that is missing or unknown, naming it.
    """
    if policy is None or policy is False:
        return []
    unknown, missing = sorted(set(policy) - set(DEFAULT_POLICY)), sorted(set(DEFAULT_POLICY) - set(policy))
    if unknown or missing:
        raise InputError(f"augmentation: unknown keys {unknown}, missing keys {missing}; the policy has {sorted(DEFAULT_POLICY)}")
    p = dict(policy)
    image, both = keys[0], list(keys)
    low, high = p["scale"]
    candidates = [
        (p["spatial_prob"], lambda prob: RandAffined(
            both, prob=prob, rotate_range=rotation_range(roi_size, p["rotate_degrees"]), scale_range=[(low - 1, high - 1)] * 3,
            mode=["bilinear", "nearest"][: len(both)], padding_mode="zeros")),
        (p["bias_field_prob"], lambda prob: RandBiasFieldd(
            image, degree=BIAS_FIELD_DEGREE, coeff_range=(-p["bias_field_coeff"], p["bias_field_coeff"]), prob=prob)),
        (p["noise_prob"], lambda prob: RandGaussianNoised(image, prob=prob, std=p["noise_std"])),
        (p["blur_prob"], lambda prob: RandGaussianSmoothd(image, sigma_x=p["blur_sigma"], sigma_y=p["blur_sigma"], sigma_z=p["blur_sigma"], prob=prob)),
        (p["brightness_prob"], lambda prob: RandScaleIntensityd(image, factors=[f - 1 for f in p["brightness"]], prob=prob)),
        (p["contrast_prob"], lambda prob: RandScaleIntensityFixedMeand(image, factors=[f - 1 for f in p["contrast"]], preserve_range=True, prob=prob)),
        (p["low_resolution_prob"], lambda prob: RandSimulateLowResolutiond(image, zoom_range=p["low_resolution_zoom"], prob=prob)),
        (p["inverted_gamma_prob"], lambda prob: RandAdjustContrastd(image, gamma=p["gamma"], invert_image=True, retain_stats=True, prob=prob)),
        (p["gamma_prob"], lambda prob: RandAdjustContrastd(image, gamma=p["gamma"], retain_stats=True, prob=prob)),
    ]
    transforms = [make(prob) for prob, make in candidates if prob > 0]
    transforms += [RandFlipd(both, prob=0.5, spatial_axis=axis) for axis in p["mirror_axes"]]
    return transforms
