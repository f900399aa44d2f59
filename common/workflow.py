"""Pieces of the training, evaluation and inference workflows that every bundle's configs share.

The transform chains are listed in the configs (``load_transforms``, ``train#patch_transforms``);
the configs call these by ``_target_`` for what is more than one MONAI transform: the intensity
normalisation chosen by ``normalization``, the post-processing chains and the epoch checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from ignite.handlers import Checkpoint, DiskSaver
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    MapTransform,
    SaveImaged,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)

from common.errors import InputError
from common.intensity import LocalRatioNormalized
from common.inversion import LabelOnInputGridd
from common.io import AtomicNibabelWriter
from common.transforms import BackgroundWhereZerod, FillEnclosedBackgroundd

# Each mode and what it does, its keys in braces (a model card's ``image_classes`` fills them in).
NORMALIZATIONS = {
    "percentile": "intensities scaled per image from the {lower}th-{upper}th percentile to [0, 1] (MRI)",
    "ct": "intensities clipped to {clip} and z-scored with mean {mean} and std {std} (CT)",
    "local_ratio": "each intensity divided by the mean of its non-zero neighbourhood (Gaussian, {sigma_mm} mm; MRI with coil shading)",
}


def intensity_normalization(normalization: Mapping[str, Any]) -> MapTransform:
    """The image's intensity normalisation, from the config's ``normalization``:

    - ``{"mode": "percentile", "lower": 0.5, "upper": 99.5}``: per image and channel, those
      percentiles mapped to 0 and 1, clipped (the default, for MRI);
    - ``{"mode": "ct", "clip": [low, high], "mean": m, "std": s}``: clipped to ``[low, high]``, then
      ``(x - m) / s`` with the data set's foreground statistics (nnU-Net's CT rule;
      ``python -m common plan`` measures them);
    - ``{"mode": "local_ratio", "sigma_mm": 20}``: per image and channel, each voxel over the mean of
      its non-zero neighbourhood (:class:`common.intensity.LocalRatioNormalized`), so that a smooth
      bias field and the intensity scale cancel out (brain-extracted MRI).
    """
    mode = normalization.get("mode")
    try:
        if mode == "percentile":
            return ScaleIntensityRangePercentilesd(
                "image", float(normalization["lower"]), float(normalization["upper"]), b_min=0.0, b_max=1.0, clip=True, channel_wise=True
            )
        if mode == "ct":
            low, high = (float(v) for v in normalization["clip"])
            mean, std = float(normalization["mean"]), float(normalization["std"])
            if not (low < high and std > 0):
                raise ValueError(f"needs clip low < high and std > 0, got clip {[low, high]} and std {std}")
            return ScaleIntensityRanged("image", low, high, (low - mean) / std, (high - mean) / std, clip=True)
        if mode == "local_ratio":
            return LocalRatioNormalized("image", float(normalization["sigma_mm"]))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"normalization {dict(normalization)}: {err}; modes: {NORMALIZATIONS}") from err
    raise InputError(f"normalization {dict(normalization)}: unknown mode {mode!r}; modes: {NORMALIZATIONS}")


def describe_normalization(normalization: Mapping[str, Any]) -> str:
    """One phrase for a model card's ``image_classes``: what ``normalization`` does to the intensities."""
    return NORMALIZATIONS[normalization["mode"]].format(**normalization)


def one_hot_outputs(num_classes: int, enclosed_background_class: int | None = None, on_input_grid: bool = False,
                    zero_is_background: bool = False) -> Compose:
    """Logits ``pred`` to its arg-max (background where the image is zero when ``zero_is_background``,
    see :class:`common.transforms.BackgroundWhereZerod`; enclosed background relabelled, see
    :class:`common.transforms.FillEnclosedBackgroundd`), then ``pred`` and ``label`` to one-hot, for
    Dice and HD95. ``on_input_grid``: the arg-max is taken on the image's own grid, where the label
    stayed (``resampled_keys`` ``["image"]`` in ``evaluate.json``; :class:`common.inversion.LabelOnInputGridd`)."""
    to_label = [LabelOnInputGridd("pred")] if on_input_grid else [AsDiscreted("pred", argmax=True)]
    return Compose([
        Activationsd("pred", softmax=True),
        BackgroundWhereZerod("pred", zero_is_background),
        *to_label,
        FillEnclosedBackgroundd("pred", enclosed_background_class),
        AsDiscreted(["pred", "label"], to_onehot=num_classes),
    ])


def write_segmentation(output_dir: str, enclosed_background_class: int | None = None, zero_is_background: bool = False) -> Compose:
    """Logits ``pred`` to a label volume on the input's own grid and affine (background where the
    image is zero when ``zero_is_background``, see :class:`common.transforms.BackgroundWhereZerod`;
    probabilities resampled and arg-maxed slab by slab, :class:`common.inversion.LabelOnInputGridd`;
    then enclosed background relabelled, see :class:`common.transforms.FillEnclosedBackgroundd`),
    written atomically as ``<input>_seg.nii.gz`` (uint8)."""
    return Compose([
        Activationsd("pred", softmax=True),
        BackgroundWhereZerod("pred", zero_is_background),
        LabelOnInputGridd("pred"),
        FillEnclosedBackgroundd("pred", enclosed_background_class),
        SaveImaged(
            "pred", output_dir=output_dir, output_postfix="seg", output_dtype=np.uint8, resample=False,
            separate_folder=False, writer=AtomicNibabelWriter,
        ),
    ])


def epoch_checkpoint(ckpt_dir: str, to_save: dict) -> Checkpoint:
    """``checkpoint_epoch=N.pt`` after every epoch, written atomically, the two latest kept (one is
    always complete while the next is written); saves its own state so that resuming restores the
    pruning list."""
    return Checkpoint(
        to_save, DiskSaver(ckpt_dir, require_empty=False), filename_pattern="checkpoint_epoch={global_step}.pt",
        global_step_transform=lambda engine, event: engine.state.epoch, n_saved=2, include_self=True,
    )
