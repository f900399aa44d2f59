"""``python -m common plan``: fingerprint a data set with MONAI's Auto3DSeg ``DataAnalyzer`` and write
``plan.json``, the config keys that fit every bundle to it (classes, channels, spacing, intensity
normalisation, ROI), merged after a bundle's ``train.json``, ``evaluate.json`` or ``inference.json``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from monai.apps.auto3dseg import DataAnalyzer
from monai.transforms import EnsureChannelFirstd, EnsureTyped, Orientationd

from common.transforms.augmentation import DEFAULT_POLICY
from common.workflow.data import Case, DatasetDescription, dataset_splits, describe_dataset
from common.errors import InputError
from common.io import write_json
from common.transforms.loading import LoadVolumed, ValidateVolumed

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
DEFAULT_MAX_ROI_VOXELS = 96**3  # the ROI every bundle's train.json is sized for
ROI_DIVISOR = 16  # every bundle's network takes grids divisible by 16 (UNETR's patch size; 8 for the others)
ANISOTROPY_RATIO = 3.0  # nnU-Net's threshold: an axis this much coarser than the others is the low-resolution axis
MAX_LABEL_VALUE = 2**16 - 1  # labels of a data set that does not name its classes are checked up to this value


def _fingerprint(cases: list[Case], in_channels: int | None, num_classes: int) -> dict[str, Any]:
    """DataAnalyzer's summary of ``cases``, read through the bundles' own loading checks (a case that
    cannot be read, or whose label does not fit its image, stops the plan naming the file)."""
    keys = ["image", "label"]
    transforms = [
        LoadVolumed(keys, image_only=True),
        EnsureChannelFirstd(keys),
        ValidateVolumed(in_channels=in_channels, num_classes=num_classes),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float),
        Orientationd(keys, axcodes="RAS", labels=None),
    ]
    analyzer = DataAnalyzer({"training": [case.item() for case in cases]}, "", output_path="", device="cpu", worker=0)
    summary = analyzer.get_all_case_stats(transform_list=transforms)["stats_summary"]
    if summary.get("n_cases") != len(cases):
        raise InputError(f"DataAnalyzer summarised {summary.get('n_cases')} of {len(cases)} cases; see its log for the ones it could not process")
    return summary


def target_spacing(spacing: dict[str, Any], shape: dict[str, Any]) -> tuple[list[float], str]:
    """The median voxel size; on anisotropic data (an axis more than ``ANISOTROPY_RATIO`` times
    coarser than the others, with correspondingly fewer voxels) that axis takes the 10th percentile
    of its spacings instead, nnU-Net's rule, so thin-slice cases are not made coarser than needed."""
    median = [float(s) for s in spacing["median"]]
    coarse = max(range(3), key=lambda i: median[i])
    others = [i for i in range(3) if i != coarse]
    if median[coarse] <= ANISOTROPY_RATIO * min(median[i] for i in others):
        return median, f"the median voxel size (max/min {max(median) / min(median):.2f} <= {ANISOTROPY_RATIO:g}: isotropic enough)"
    voxels = [float(s) for s in shape["median"]]
    if voxels[coarse] * ANISOTROPY_RATIO >= min(voxels[i] for i in others):
        return median, f"the median voxel size (axis {coarse} is coarser but has as many voxels as the others)"
    chosen = list(median)
    chosen[coarse] = max(float(spacing["percentile_10_0"][coarse]), max(median[i] for i in others))
    return chosen, (f"the median voxel size, but the 10th percentile ({chosen[coarse]:g} mm) on the low-resolution axis {coarse} "
                    f"(median {median[coarse]:g} mm, more than {ANISOTROPY_RATIO:g}x the others)")


def roi_for(median_shape: list[int], max_voxels: int, divisor: int = ROI_DIVISOR) -> tuple[list[int], str]:
    """The median image shape rounded up to multiples of ``divisor``, then shrunk one ``divisor`` at
    a time on the axis the ROI covers most of (nnU-Net's rule) until it holds ``max_voxels`` or fewer."""
    roi = [max(divisor, math.ceil(n / divisor) * divisor) for n in median_shape]
    shrunk = False
    while math.prod(roi) > max_voxels and any(r > divisor for r in roi):
        axis = max((i for i in range(3) if roi[i] > divisor), key=lambda i: (roi[i] / median_shape[i], roi[i]))
        roi[axis] -= divisor
        shrunk = True
    why = f"the median image shape after resampling {median_shape} rounded up to multiples of {divisor}"
    if shrunk:
        why += f", shrunk on the axes it covers most to hold at most --max_roi_voxels {max_voxels:,}"
    return roi, f"{why} ({math.prod(roi):,} voxels)"


def is_ct(channel_names: list[str]) -> bool:
    """Every channel is named ``CT`` (nnU-Net's convention for calibrated Hounsfield units)."""
    return bool(channel_names) and all(name.upper() == "CT" for name in channel_names)


def normalization_for(channel_names: list[str], foreground: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """CT (every channel named ``CT``): clip to the foreground's 0.5-99.5 percentiles and z-score
    with the foreground mean and standard deviation (nnU-Net's rule; DataAnalyzer's statistics of
    the labelled voxels, averaged over cases). Anything else (MRI ...): per image and channel, the
    0.5-99.5 percentiles mapped to [0, 1]."""
    if is_ct(channel_names):
        low, high = float(foreground["percentile_00_5"]), float(foreground["percentile_99_5"])
        mean, std = float(foreground["mean"]), float(foreground["stdev"])
        if not std > 0:
            raise InputError(f"the foreground intensities have standard deviation {std}; CT normalisation needs labelled voxels that vary")
        normalization = {"mode": "ct", "clip": [round(low, 2), round(high, 2)], "mean": round(mean, 3), "std": round(std, 3)}
        return normalization, (f"CT: clip to the foreground 0.5-99.5 percentiles [{low:.1f}, {high:.1f}], z-score with the "
                               f"foreground mean {mean:.1f} and std {std:.1f} (nnU-Net's rule)")
    return {"mode": "percentile", "lower": 0.5, "upper": 99.5}, (
        f"per image: 0.5-99.5 percentiles to [0, 1] (channels {channel_names}, not CT)")


def _classes(dataset: DatasetDescription, found: list[int]) -> tuple[list[str], str]:
    if dataset.class_names is not None:
        unused = [name for value, name in enumerate(dataset.class_names) if value not in found]
        note = f"; not in any label: {unused}" if unused else ""
        return dataset.class_names, f"from {dataset.source.name}'s labels{note}"
    names = ["background"] + [f"class {v}" for v in range(1, max(found) + 1)]
    return names, f"label values 0..{max(found)} found in the labels (the data set does not name them)"


def make_plan(dataset_dir: str, max_roi_voxels: int = DEFAULT_MAX_ROI_VOXELS) -> tuple[dict[str, Any], list[str]]:
    """The plan of the data set at ``dataset_dir`` and why each key has its value."""
    dataset = describe_dataset(dataset_dir)
    cases = dataset.labelled
    in_channels = len(dataset.channel_names) if dataset.channel_names else None
    num_classes = len(dataset.class_names) if dataset.class_names else MAX_LABEL_VALUE + 1
    summary = _fingerprint(cases, in_channels, num_classes)
    image_stats = summary["image_stats"]
    channels = sorted({int(image_stats["channels"]["min"]), int(image_stats["channels"]["max"])})
    if len(channels) > 1:
        raise InputError(f"{dataset.source}: images have {channels[0]} to {channels[1]} channels; every case needs the same")
    channel_names = dataset.channel_names or [f"channel {i}" for i in range(channels[0])]
    class_names, classes_why = _classes(dataset, [int(v) for v in summary["label_stats"]["labels"]])
    spacing, spacing_why = target_spacing(image_stats["spacing"], image_stats["shape"])
    median_shape = [max(1, round(float(mm) / s)) for mm, s in zip(image_stats["sizemm"]["median"], spacing)]
    roi_size, roi_why = roi_for(median_shape, max_roi_voxels)
    normalization, normalization_why = normalization_for(channel_names, summary["image_foreground_stats"]["intensity"])
    plan = {
        "num_classes": len(class_names),
        "class_names": class_names,
        "in_channels": len(channel_names),
        "channel_names": channel_names,
        "spacing": [round(s, 4) for s in spacing],
        "normalization": normalization,
        "roi_size": roi_size,
        "input_contract": None,
        "enclosed_background_class": None,
        "synthesis": None,
    }
    if is_ct(channel_names):
        plan["augmentation"] = {**DEFAULT_POLICY, "bias_field_prob": 0.0}
    notes = [
        f"{len(cases)} labelled cases, {dataset.layout} layout",
        f"num_classes {plan['num_classes']}, class_names {class_names}: {classes_why}",
        f"in_channels {plan['in_channels']}, channel_names {channel_names}",
        f"spacing {plan['spacing']} mm: {spacing_why}",
        f"normalization: {normalization_why}",
        f"roi_size {roi_size}: {roi_why}",
        "augmentation: " + ("the collection's policy without its MRI bias field (CT intensities are calibrated)" if is_ct(channel_names)
                            else "the bundle's own (not in the plan)"),
        "synthesis: off (training images drawn from the label maps suit anatomy whose classes are shapes, as the brain "
        "bundles' tissues; where a class is defined by its contrast, such as an enhancing tumour, it would erase it; set "
        "'synthesis' in the plan to the policy of train.json to turn it on)",
        "input_contract and enclosed_background_class: none (the brain defaults, a brain-extracted input and enclosed "
        "background as CSF, do not carry over to other data; set them in the plan if your labels need them)",
    ]
    if dataset.validation is None:
        splits = dataset_splits(dataset)
        notes.append(f"validation: fold 0 of the {len(splits)}-fold split in {dataset.root / 'splits.json'} "
                     f"(cases: {len(splits[0]['val'])}; --fold picks another)")
    else:
        notes.append(f"validation: the data set's own validation section (cases: {len(dataset.validation)})")
    return plan, notes


def plan(dataset_dir: str, max_roi_voxels: int = DEFAULT_MAX_ROI_VOXELS) -> None:
    """Fingerprint the data set at ``dataset_dir`` (MONAI Auto3DSeg's ``DataAnalyzer``) and write
    ``dataset_dir/plan.json``: ``num_classes``, ``class_names``, ``in_channels``,
    ``channel_names``, ``spacing``, ``normalization``, ``roi_size``, ``synthesis`` (off) and, for CT, ``augmentation``
    (the collection's policy without its MRI bias field) for any bundle (and no input contract nor
    enclosed-background relabelling, which are the brain task's), with
    ``splits.json`` (5 folds, fixed seed) where the data set has no validation section. Prints what
    it decided and why; the same data give the same file. Use it as

        python -m monai.bundle run --config_file "['bundles/<b>/configs/train.json','DIR/plan.json']" --dataset_dir DIR

    and the same with ``evaluate.json`` and ``inference.json``.

    Args:
        dataset_dir: the data set: Decathlon ``dataset.json``, nnU-Net v2 raw layout, or
            ``imagesTr/`` + ``labelsTr/``.
        max_roi_voxels: the most voxels the training ROI may hold (memory: 96^3 is what every
            bundle's ``train.json`` is sized for on a GPU; the CPU demos use 48^3 = 110592).
    """
    settings, notes = make_plan(dataset_dir, max_roi_voxels)
    path = Path(dataset_dir) / PLAN_FILE
    write_json(path, settings)
    print("\n".join([f"plan for {dataset_dir}:", *(f"- {note}" for note in notes), f"written to {path}"]))
