"""Loading a volume and the checks that stop bad input early, with the file and the problem in the message."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform

from common.errors import InputError, first_line
from common.transforms.geometry import DEFAULT_MAX_RESAMPLED_VOXELS, DEFAULT_MAX_VOXELS, check_geometry, read_geometry
from common.transforms.nifti_reader import StreamingNibabelReader


def source_name(volume: Any) -> str:
    """The file a loaded volume came from, or ``"<array>"``."""
    meta = getattr(volume, "meta", {})
    return str(meta.get("filename_or_obj", "<array>"))


class LoadVolumed(LoadImaged):
    """:class:`monai.transforms.LoadImaged` that first reads each file's header and refuses, before
    any voxel is read, a grid of more than ``max_voxels`` values as stored, or more than
    ``max_resampled_voxels`` once resampled to ``spacing``, or a voxel size or affine that is zero,
    negative or not finite
    (:func:`common.transforms.geometry.check_geometry`); and whose read failures raise :class:`InputError`
    naming the file (missing, truncated, not an image). A folder (a DICOM series) is checked when
    it is found (:func:`common.cli.scan.find_scan`). A ``.nii.gz`` is decompressed straight into its
    array (:class:`common.transforms.nifti_reader.StreamingNibabelReader`).

    Args:
        keys: keys of the files to load.
        max_voxels: the most values an image may hold as stored.
        spacing: the voxel size in mm the pipeline resamples to (``None``: not resampled).
        max_resampled_voxels: the most values an image may hold once resampled.
        kwargs: other arguments of ``LoadImaged``.
    """

    def __init__(self, keys: KeysCollection, max_voxels: int = DEFAULT_MAX_VOXELS, spacing: Sequence[float] | None = None,
                 max_resampled_voxels: int = DEFAULT_MAX_RESAMPLED_VOXELS, **kwargs) -> None:
        super().__init__(keys, **kwargs)
        self.register(StreamingNibabelReader())
        self.max_voxels, self.max_resampled_voxels = max_voxels, max_resampled_voxels
        self.spacing = None if spacing is None else list(spacing)

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            for path in [data[key]] if isinstance(data[key], (str, Path)) else data[key]:
                if Path(path).is_file():
                    check_geometry(path, read_geometry(path), self.max_voxels, self.spacing, self.max_resampled_voxels)
        try:
            return super().__call__(data, reader)
        except Exception as err:
            raise InputError(self._describe_failure(data, reader, err)) from err

    def _describe_failure(self, data: Mapping[Hashable, Any], reader: Any, err: Exception) -> str:
        """``"<file>: cannot be read ..."`` for the first key whose file fails to load on its own."""
        for key in self.key_iterator(dict(data)):
            try:
                self._loader(data[key], reader)
            except Exception as key_err:
                return f"{data[key]}: cannot be read as an image ({first_line(key_err)})"
        return f"{', '.join(str(data[k]) for k in self.key_iterator(dict(data)))}: cannot be loaded ({first_line(err)})"


class ValidateVolumed(MapTransform):
    """Checks a channel-first image (and its label) right after loading.

    Image: 3 spatial dimensions, ``in_channels`` channels, finite values, not all the same. Label (when
    ``label_key`` is in the data): one channel, the image's spatial shape and affine, integer values
    in ``0 .. num_classes - 1``. Raises :class:`InputError` ``"<file>: <problem>"``.

    Args:
        image_key: key of the image, shape ``(C, D, H, W)``.
        label_key: key of the label, shape ``(1, D, H, W)``; ``None`` for images only.
        in_channels: channels the network expects (``None``: any).
        num_classes: classes the network predicts, background included.
        affine_tolerance: absolute tolerance (mm) between image and label affines.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        in_channels: int | None = 1,
        num_classes: int = 2,
        affine_tolerance: float = 1e-3,
    ) -> None:
        keys: KeysCollection = [image_key] if label_key is None else [image_key, label_key]
        super().__init__(keys, allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key
        self.in_channels, self.num_classes = in_channels, num_classes
        self.affine_tolerance = affine_tolerance

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        self._check_image(image)
        if self.label_key is not None and self.label_key in d:
            self._check_label(d[self.label_key], image)
        return d

    def _check_image(self, image: torch.Tensor) -> None:
        name = source_name(image)
        if image.ndim != 4:
            raise InputError(f"{name}: expected a 3D volume, got {image.ndim - 1} spatial dimensions {tuple(image.shape[1:])}")
        if self.in_channels is not None and image.shape[0] != self.in_channels:
            raise InputError(f"{name}: the network takes {self.in_channels} channel(s), the image has {image.shape[0]}")
        values = torch.as_tensor(image)
        if not torch.isfinite(values.sum()):  # a NaN or inf makes the sum one; counted only then (no voxel-sized temporary)
            bad = int((~torch.isfinite(values)).sum())
            if bad:
                raise InputError(f"{name}: {bad} NaN or infinite intensities")
        low, high = torch.aminmax(values)
        if low == high:
            raise InputError(f"{name}: every voxel is {float(low):g}, a blank image with nothing to segment")

    def _check_label(self, label: torch.Tensor, image: torch.Tensor) -> None:
        name = source_name(label)
        if label.ndim != 4 or label.shape[0] != 1:
            raise InputError(f"{name}: expected a one-channel 3D label, got shape {tuple(label.shape)}")
        if label.shape[1:] != image.shape[1:]:
            raise InputError(
                f"{name}: label shape {tuple(label.shape[1:])} differs from image shape {tuple(image.shape[1:])} "
                f"({source_name(image)})"
            )
        if isinstance(label, MetaTensor) and isinstance(image, MetaTensor):
            if not np.allclose(label.affine.numpy(), image.affine.numpy(), atol=self.affine_tolerance):
                raise InputError(f"{name}: label affine differs from the affine of image {source_name(image)}")
        values = torch.unique(torch.as_tensor(label))
        invalid = values[(values < 0) | (values > self.num_classes - 1) | (values != torch.round(values))]
        if invalid.numel():
            shown = ", ".join(f"{v:g}" for v in invalid[:5].tolist())
            raise InputError(f"{name}: label values {shown} outside 0..{self.num_classes - 1}")


class CheckInputContractd(MapTransform):
    """Refuses an image that breaks what the weights expect, as far as it can be checked physically.

    ``contract["max_nonzero_ml"]``: the most millilitres of non-zero voxels an image may hold. The
    brain bundles expect a brain-extracted T1 (zero outside the brain, as FSL BET, SynthStrip or
    HD-BET make it): a brain is at most about 2 L, while a whole head, whose scalp, skull, neck and
    background noise are not zero, fills far more of its field of view. ``contract["expects"]`` says
    in words what is expected. ``None`` checks nothing (e.g. CT weights planned on a CT data set).

    Args:
        contract: ``{"max_nonzero_ml": float, "expects": str}`` or ``None``.
        image_key: key of the image ``(C, D, H, W)`` with its affine.
    """

    def __init__(self, contract: Mapping[str, Any] | None, image_key: str = "image") -> None:
        super().__init__([image_key])
        self.contract, self.image_key = contract, image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.contract is None:
            return d
        image = d[self.image_key]
        voxel_ml = abs(float(np.linalg.det(np.asarray(image.affine, dtype=float)[:3, :3]))) / 1000.0
        values = torch.as_tensor(image)
        nonzero = torch.count_nonzero(values[0]) if values.shape[0] == 1 else torch.count_nonzero((values != 0).any(dim=0))
        nonzero_ml = float(nonzero) * voxel_ml
        limit = float(self.contract["max_nonzero_ml"])
        if nonzero_ml > limit:
            raise InputError(f"{source_name(image)}: {nonzero_ml:,.0f} mL of non-zero voxels, more than {limit:,.0f} mL; "
                             f"the weights expect {self.contract['expects']}")
        return d
