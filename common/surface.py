"""The public surface of ``common``: every name a bundle's configs (``_target_``, ``$common....``) and
its ``scripts/`` reference, and where the names of earlier versions went.

A packaged bundle vendors the ``common`` it was built with, so its configs always meet their own
code. These lists are for configs that meet a newer ``common`` (a config a user wrote against an
earlier version): a name that moved still resolves to the same object; a name that is gone stops
with one line saying what replaced it and in which version. ``tests/test_surface.py`` checks that
every generated config references exactly :data:`CONFIG_NAMES`, that each resolves, and that every
old name resolves or is refused as listed here.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from common.errors import InputError

VERSION = "0.4.0"  # the collection version that moved common into rooms

CONFIG_NAMES = (
    "common.errors.report_input_errors_briefly",
    "common.networks.ANNNet",
    "common.networks.AttentionUNet",
    "common.networks.MSGANet",
    "common.networks.MTUNet",
    "common.networks.NonLocalUNet",
    "common.networks.UNETR",
    "common.transforms.augmentation.checked_policy",
    "common.transforms.augmentation.rotation_range",
    "common.transforms.intensity.LocalRatioNormalized",
    "common.transforms.intensity.normalization_mode",
    "common.transforms.inversion.LabelOnInputGridd",
    "common.transforms.inversion.RESAMPLE_DTYPE",
    "common.transforms.inversion.RESAMPLE_MODE",
    "common.transforms.inversion.RESAMPLE_PADDING",
    "common.transforms.loading.CheckInputContractd",
    "common.transforms.loading.LoadVolumed",
    "common.transforms.loading.ValidateVolumed",
    "common.transforms.postprocessing.AtomicNibabelWriter",
    "common.transforms.postprocessing.BackgroundWhereZerod",
    "common.transforms.postprocessing.FillEnclosedBackgroundd",
    "common.transforms.synthesis.RandSyntheticImaged",
    "common.transforms.synthesis.RandThickSlicesd",
    "common.transforms.synthesis.SynthesizeFromLabelsd",
    "common.transforms.synthesis.checked_synthesis",
    "common.workflow.checkpoints.BestWeights",
    "common.workflow.checkpoints.CheckpointMetadata",
    "common.workflow.checkpoints.StrictCheckpointLoader",
    "common.workflow.checkpoints.epoch_checkpoint",
    "common.workflow.checkpoints.latest_checkpoint",
    "common.workflow.checkpoints.trained_settings",
    "common.workflow.data.check_class_names",
    "common.workflow.data.inference_items",
    "common.workflow.data.load_datalist",
    "common.workflow.handlers.AuxiliaryOutputs",
    "common.workflow.losses.GuidedAttentionLoss",
    "common.workflow.report.SegmentationReport",
)

# Names of 0.3.0 and earlier (flat modules) -> where they are now.
MOVED = {
    "common.augmentation": "common.transforms.augmentation",
    "common.checkpoints": "common.workflow.checkpoints",
    "common.data": "common.workflow.data",
    "common.demo_data": "common.cli.prepare_data",
    "common.dicom_seg": "common.cli.dicom_seg",
    "common.dicomweb": "common.cli.dicomweb",
    "common.export": "common.cli.export",
    "common.geometry": "common.transforms.geometry",
    "common.handlers": "common.workflow.handlers",
    "common.intensity": "common.transforms.intensity",
    "common.inversion": "common.transforms.inversion",
    "common.losses": "common.workflow.losses",
    "common.nifti_reader": "common.transforms.nifti_reader",
    "common.onnx_network": "common.cli.onnx_network",
    "common.overlay": "common.cli.overlay",
    "common.package": "common.cli.package",
    "common.plan": "common.cli.plan",
    "common.report": "common.workflow.report",
    "common.scan": "common.cli.scan",
    "common.segment": "common.cli.segment",
    "common.verify": "common.cli.verify",
    "common.io.AtomicNibabelWriter": "common.transforms.postprocessing.AtomicNibabelWriter",
    "common.transforms.BackgroundWhereZerod": "common.transforms.postprocessing.BackgroundWhereZerod",
    "common.transforms.CheckInputContractd": "common.transforms.loading.CheckInputContractd",
    "common.transforms.FillEnclosedBackgroundd": "common.transforms.postprocessing.FillEnclosedBackgroundd",
    "common.transforms.LoadVolumed": "common.transforms.loading.LoadVolumed",
    "common.transforms.ValidateVolumed": "common.transforms.loading.ValidateVolumed",
    "common.transforms.source_name": "common.transforms.loading.source_name",
    "common.workflow.describe_normalization": "common.transforms.intensity.describe_normalization",
    "common.workflow.epoch_checkpoint": "common.workflow.checkpoints.epoch_checkpoint",
}

# Factories of 0.3.0 that the configs now spell out as MONAI transform lists, by the name they are
# looked up under now -> (their name in 0.3.0, what replaced them).
REMOVED = {
    "common.transforms.augmentation.augmentations": (
        "common.augmentation.augmentations",
        "train.json lists the augmentation transforms (train#augmentations), their probabilities and ranges read from "
        "the 'augmentation' key"),
    "common.workflow.intensity_normalization": (
        "common.workflow.intensity_normalization",
        "load_transforms lists the normalisation transforms of every mode, the one of normalization['mode'] enabled"),
    "common.workflow.one_hot_outputs": ("common.workflow.one_hot_outputs", "validate#postprocessing lists its MONAI transforms"),
    "common.workflow.write_segmentation": ("common.workflow.write_segmentation", "inference.json's postprocessing lists its MONAI transforms"),
}


def resolve(dotted: str) -> Any:
    """The object at ``dotted`` (``package.module.name``), importing modules as needed."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            found: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        for part in parts[split:]:
            found = getattr(found, part)
        return found
    raise ModuleNotFoundError(dotted)


def lazy_getattr(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for ``package``: its submodules are imported when first
    used, an old name of :data:`MOVED` gives the object it moved to, and one of :data:`REMOVED` is
    an :class:`InputError` saying what replaced it."""

    def __getattr__(name: str) -> Any:
        dotted = f"{package}.{name}"
        if not name.startswith("_") and hasattr(sys.modules[package], "__path__") and importlib.util.find_spec(dotted) is not None:
            return importlib.import_module(dotted)
        if dotted in MOVED:
            return resolve(MOVED[dotted])
        if dotted in REMOVED:
            old, replacement = REMOVED[dotted]
            raise InputError(f"{old}: removed in attention-bundles {VERSION}, where {replacement}; this config was "
                             "written for an earlier version: run it with the common it was packaged with (a package zip "
                             "carries its own), or with configs generated for this version (make configs)")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
