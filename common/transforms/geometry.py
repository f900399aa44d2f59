"""An image's grid read from its header alone, and the limits checked on it before any voxel is
read or resampled: a header can claim a grid that would exhaust memory, or a voxel size that makes
resampling do so, and zero, negative or non-finite voxel sizes or affines make no sense at all."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError, first_line

DEFAULT_MAX_VOXELS = 2**29  # as stored: 512 x 512 x 2048 voxels (a thin-slice whole-body CT), 2 GiB as float32
# once resampled: 512^3; resampling needs several times its output in sampling grids (about 3 GiB here)
DEFAULT_MAX_RESAMPLED_VOXELS = 2**27
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Geometry:
    """A grid: spatial ``shape`` ``(D, H, W)``, ``channels``, and the 4x4 ``affine`` from voxel
    indices to millimetres (RAS for NIfTI, LPS for ITK readers: only lengths and axes are used)."""

    shape: tuple[int, ...]
    channels: int
    affine: np.ndarray

    @property
    def voxel_size(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def read_geometry(path: str | Path) -> Geometry:
    """The grid of the image file at ``path`` from its header, without reading its voxels
    (NIfTI through nibabel, other formats through ITK's ``ImageIO``)."""
    path = Path(path)
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            image = nib.load(path)
            shape = tuple(int(n) for n in image.shape)
            return Geometry(shape[:3], int(np.prod(shape[3:], dtype=np.int64)), np.asarray(image.affine, dtype=float))
        import itk

        io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
        if io is None:
            raise ValueError("no ITK reader for this file")
        io.SetFileName(str(path))
        io.ReadImageInformation()
        dims = io.GetNumberOfDimensions()
        affine = np.eye(4)
        for axis in range(min(dims, 3)):
            affine[:3, axis] = np.asarray(io.GetDirection(axis), dtype=float)[:3] * io.GetSpacing(axis)
            affine[axis, 3] = io.GetOrigin(axis)
        shape = tuple(int(io.GetDimensions(axis)) for axis in range(dims))
        return Geometry(shape[:3], int(io.GetNumberOfComponents()) * int(np.prod(shape[3:], dtype=np.int64)), affine)
    except Exception as err:
        raise InputError(f"{path}: cannot be read as an image ({first_line(err)})") from err


def resampled_shape(geometry: Geometry, spacing: list[float] | tuple[float, ...]) -> list[int]:
    """The spatial shape of the grid resampled to ``spacing`` (millimetres, in RAS axis order, as
    ``Orientationd`` then ``Spacingd`` make it)."""
    axes = np.argmax(np.abs(geometry.affine[:3, :3]), axis=0)
    return [math.ceil(n * size / spacing[axis]) for n, size, axis in zip(geometry.shape, geometry.voxel_size, axes)]


def check_geometry(path: str | Path, geometry: Geometry, max_voxels: int = DEFAULT_MAX_VOXELS, spacing: list[float] | None = None,
                   max_resampled_voxels: int = DEFAULT_MAX_RESAMPLED_VOXELS) -> None:
    """:class:`InputError` naming ``path`` for a grid that is not 3D, a voxel size or affine that is
    zero, negative or not finite, more than ``max_voxels`` values as stored, or more than
    ``max_resampled_voxels`` once resampled to ``spacing``."""
    shape = " x ".join(str(n) for n in geometry.shape)
    if len(geometry.shape) < 3 or min(geometry.shape) < 1:
        raise InputError(f"{path}: expected a 3D volume, got {len(geometry.shape)} spatial dimensions {tuple(geometry.shape)}")
    if not np.all(np.isfinite(geometry.affine)):
        raise InputError(f"{path}: the header's affine holds NaN or infinite values")
    size = geometry.voxel_size
    if not np.all(size > 0) or abs(np.linalg.det(geometry.affine[:3, :3])) <= 0:
        raise InputError(f"{path}: voxel size {' x '.join(f'{s:g}' for s in size)} mm; every axis needs a positive size")
    stored = math.prod(geometry.shape) * geometry.channels
    if stored > max_voxels:
        raise InputError(f"{path}: {shape} voxels x {geometry.channels} channel(s) = {stored:,} values, more than "
                         f"max_voxels {max_voxels:,}; refused before reading (raise --max_voxels for a real scan that large)")
    if spacing is not None:
        resampled = resampled_shape(geometry, spacing)
        total = math.prod(resampled) * geometry.channels
        if total > max_resampled_voxels:
            raise InputError(f"{path}: with voxels of {' x '.join(f'{s:g}' for s in size)} mm, resampling to "
                             f"{' x '.join(f'{s:g}' for s in spacing)} mm makes {' x '.join(map(str, resampled))} = {total:,} values, "
                             f"more than max_resampled_voxels {max_resampled_voxels:,}; check the header's voxel size")
