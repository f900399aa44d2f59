"""Pieces of the training, evaluation and inference workflows that every bundle's configs share.

Each bundle's JSON calls these by ``_target_`` with its own keys (``in_channels``, ``spacing``,
``roi_size`` ...), so the transform chains and checkpoint rules are written once, here, and a
bundle folder still runs on its own with ``common`` importable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ignite.handlers import Checkpoint, DiskSaver
from monai.data import ImageReader
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    ClassesToIndicesd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandCropByLabelClassesd,
    SaveImaged,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SpatialPadd,
)

from common.augmentation import augmentations
from common.errors import InputError
from common.geometry import DEFAULT_MAX_RESAMPLED_VOXELS, DEFAULT_MAX_VOXELS
from common.inversion import RESAMPLE_DTYPE, RESAMPLE_MODE, RESAMPLE_PADDING, LabelOnInputGridd
from common.io import AtomicNibabelWriter
from common.transforms import CheckInputContractd, FillEnclosedBackgroundd, LoadVolumed, ValidateVolumed

NORMALIZATIONS = {
    "percentile": "per image and channel, the 'lower' and 'upper' percentiles mapped to 0 and 1, clipped (MRI)",
    "ct": "clipped to 'clip' [low, high], then z-scored with the data set's 'mean' and 'std' (CT)",
}


def intensity_normalization(normalization: Mapping[str, Any]) -> MapTransform:
    """The image's intensity normalisation, from the config's ``normalization``:

    - ``{"mode": "percentile", "lower": 0.5, "upper": 99.5}``: per image and channel, those
      percentiles mapped to 0 and 1, clipped (the default, for MRI);
    - ``{"mode": "ct", "clip": [low, high], "mean": m, "std": s}``: clipped to ``[low, high]``, then
      ``(x - m) / s`` with the data set's foreground statistics (nnU-Net's CT rule;
      ``python -m common plan`` measures them).
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
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"normalization {dict(normalization)}: {err}; modes: {NORMALIZATIONS}") from err
    raise InputError(f"normalization {dict(normalization)}: unknown mode {mode!r}; modes: {NORMALIZATIONS}")


def load_volumes(
    keys: str | Sequence[str],
    in_channels: int,
    num_classes: int,
    spacing: Sequence[float],
    normalization: Mapping[str, Any],
    reader: str | ImageReader | None = None,
    resample_label: bool = True,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_resampled_voxels: int = DEFAULT_MAX_RESAMPLED_VOXELS,
    input_contract: Mapping[str, Any] | None = None,
) -> list[MapTransform]:
    """Read, check, reorient (RAS), resample to ``spacing`` and normalise intensities.

    Args:
        keys: ``"image"`` for inference, ``["image", "label"]`` for training and evaluation; an
            image of several files (one per channel) is read as one multi-channel image.
        in_channels: channels the network takes; other images are refused by name.
        num_classes: classes, background included; labels outside ``0 .. num_classes - 1`` are refused.
        spacing: voxel size in mm after resampling.
        normalization: see :func:`intensity_normalization`.
        reader: image reader of ``LoadImaged`` (``None``: chosen by file suffix; a folder is read
            as a DICOM series by ITK), e.g. ``ITKReader(series_name=uid)`` for one of several series.
        resample_label: ``False`` keeps the label on its own grid (scores on the data's own grid:
            the prediction is inverted to it, see :func:`one_hot_outputs`).
        max_voxels: the most values an image may hold as stored, and ``max_resampled_voxels`` once
            resampled to ``spacing``; checked on its header before it is read
            (:func:`common.geometry.check_geometry`).
        max_resampled_voxels: see ``max_voxels``.
        input_contract: what the weights expect of an image, checked on it as loaded
            (:class:`common.transforms.CheckInputContractd`; ``None``: nothing).
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    has_label = "label" in keys
    spatial = keys if resample_label else ["image"]
    return [
        LoadVolumed(keys, max_voxels, spacing, max_resampled_voxels, reader=reader, image_only=True),
        EnsureChannelFirstd(keys),
        ValidateVolumed(label_key="label" if has_label else None, in_channels=in_channels, num_classes=num_classes),
        CheckInputContractd(input_contract),
        Orientationd(spatial, axcodes="RAS", labels=None),
        Spacingd(spatial, pixdim=spacing, mode=[RESAMPLE_MODE, "nearest"][: len(spatial)], padding_mode=RESAMPLE_PADDING,
                 dtype=RESAMPLE_DTYPE),
        intensity_normalization(normalization),
        EnsureTyped(keys),
    ]


def training_crops(roi_size: Sequence[int], num_samples: int, num_classes: int, augmentation: Mapping[str, Any] | None) -> list[MapTransform]:
    """``num_samples`` random ``roi_size`` crops per volume, each centred on a voxel of a class drawn
    uniformly among the classes present (background included; label indices computed once per
    volume), so small classes are seen as often as large ones; each augmented by the
    ``augmentation`` policy (:func:`common.augmentation.augmentations`; ``None``: none)."""
    keys = ["image", "label"]
    return [
        SpatialPadd(keys, spatial_size=roi_size),
        ClassesToIndicesd("label", num_classes=num_classes, indices_postfix="_class_indices"),
        RandCropByLabelClassesd(keys, "label", roi_size, num_classes=num_classes, num_samples=num_samples,
                                indices_key="label_class_indices", warn=False),
        DeleteItemsd(["label_class_indices"]),
        *augmentations(augmentation, roi_size, keys),
    ]


def one_hot_outputs(num_classes: int, enclosed_background_class: int | None = None, on_input_grid: bool = False) -> Compose:
    """Logits ``pred`` to its arg-max (enclosed background relabelled, see
    :class:`common.transforms.FillEnclosedBackgroundd`), then ``pred`` and ``label`` to one-hot, for
    Dice and HD95. ``on_input_grid``: the arg-max is taken on the image's own grid, where the label
    stayed (``load_volumes(resample_label=False)``; :class:`common.inversion.LabelOnInputGridd`)."""
    to_label = [LabelOnInputGridd("pred")] if on_input_grid else [AsDiscreted("pred", argmax=True)]
    return Compose([
        Activationsd("pred", softmax=True),
        *to_label,
        FillEnclosedBackgroundd("pred", enclosed_background_class),
        AsDiscreted(["pred", "label"], to_onehot=num_classes),
    ])


def write_segmentation(output_dir: str, enclosed_background_class: int | None = None) -> Compose:
    """Logits ``pred`` to a label volume on the input's own grid and affine (probabilities resampled
    and arg-maxed slab by slab, :class:`common.inversion.LabelOnInputGridd`; then enclosed background
    relabelled, see :class:`common.transforms.FillEnclosedBackgroundd`), written atomically as
    ``<input>_seg.nii.gz`` (uint8)."""
    return Compose([
        Activationsd("pred", softmax=True),
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
