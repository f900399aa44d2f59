"""The collection's training augmentation policy: nnU-Net's family of spatial and intensity
augmentations and an MRI bias field, every probability and range a key of one config dict, which
``train#augmentations`` (a list of MONAI transforms in every bundle's ``train.json``) reads."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import InputError
from common.surface import lazy_getattr

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


def checked_policy(policy: Mapping[str, Any] | bool | None) -> dict[str, Any]:
    """The augmentation ``policy`` of a config (keys as in :data:`DEFAULT_POLICY`), checked, for the
    transforms ``train#augmentations`` lists: each reads its probability and range from it, and one
    whose probability is 0 is left out. ``None`` (``null`` in a config) or ``False``
    (``--augmentation False`` on the command line, where MONAI drops a ``None``) switches
    augmentation off: every probability 0, no mirrored axis.

    Raises:
        InputError: a policy key that is missing or unknown, naming it.
    """
    if policy is None or policy is False:
        return {**DEFAULT_POLICY, **{key: 0.0 for key in DEFAULT_POLICY if key.endswith("_prob")}, "mirror_axes": []}
    return checked_keys("augmentation", policy, DEFAULT_POLICY)


def checked_keys(name: str, policy: Mapping[str, Any], default: Mapping[str, Any]) -> dict[str, Any]:
    """``policy`` (the config's ``name`` dict) as a dict; :class:`InputError` naming the keys it has
    that ``default`` has not, and those it lacks."""
    unknown, missing = sorted(set(policy) - set(default)), sorted(set(default) - set(policy))
    if unknown or missing:
        raise InputError(f"{name}: unknown keys {unknown}, missing keys {missing}; the policy has {sorted(default)}")
    return dict(policy)


__getattr__ = lazy_getattr(__name__)  # names of earlier versions (common.surface)
