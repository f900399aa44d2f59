"""Finding the scan to segment: one NIfTI file, or one DICOM series of a folder (read by ITK), its
geometry checked from its headers, and staged as a private copy so that what is read is what is
hashed."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from monai.data import ITKReader

from common.errors import InputError, first_line
from common.transforms.geometry import DEFAULT_MAX_VOXELS, Geometry, check_geometry, read_geometry
from common.io import file_sha256

SLICE_TOLERANCE = 0.01  # relative deviation from the median slice spacing accepted as even
ORIENTATION_TOLERANCE = 1e-4

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".dcm")
NOT_IN_UID_NAMES = re.compile(r"[^A-Za-z0-9._+-]")


def stem(path: Path) -> str:
    """A file's name without its image suffix (``scan.nii.gz`` -> ``scan``)."""
    return next((path.name[: -len(s)] for s in IMAGE_SUFFIXES if path.name.lower().endswith(s)), path.stem)


def uid_in_name(uid: str) -> str:
    """A series UID (read from a file's headers or a server's answer) as part of an output's file
    name: any character but letters, digits and ``._+-`` becomes ``_``, so that no UID can name a
    path outside the output folder. A DICOM UID (digits and dots) is kept as it is."""
    return NOT_IN_UID_NAMES.sub("_", uid)


@dataclass
class Scan:
    """A scan to segment.

    Attributes:
        path: the NIfTI file, or the folder of the DICOM series.
        files: every file the scan is made of (one for NIfTI, the slices of a DICOM series).
        series_uid: the DICOM series instance UID, ``None`` for NIfTI.
    """

    path: Path
    files: list[Path] = field(default_factory=list)
    series_uid: str | None = None
    geometry: Geometry | None = None

    @property
    def name(self) -> str:
        """File-name stem of the outputs: the file's name without its image suffix, or the folder's
        name and the series UID (two series of one folder never share outputs)."""
        return f"{self.path.name}_{uid_in_name(self.series_uid)}" if self.series_uid is not None else stem(self.path)

    @property
    def source(self) -> Path:
        """What ``LoadImage`` reads: the NIfTI file, or the folder holding the series' files."""
        return self.path if self.series_uid is None else self.files[0].parent

    def reader(self) -> ITKReader | None:
        """The reader for ``LoadImage``: ITK restricted to this series, or ``None`` (by suffix)."""
        return None if self.series_uid is None else ITKReader(series_name=self.series_uid)

    def staged(self, folder: Path) -> Scan:
        """This scan copied into ``folder`` (created): the files read and hashed from then on are the
        copies, which nothing else writes to."""
        folder.mkdir(parents=True, exist_ok=True)
        copies = []
        for index, source in enumerate(self.files):
            copy = folder / (source.name if self.series_uid is None else f"{index:05d}.dcm")
            shutil.copyfile(source, copy)
            copies.append(copy)
        return Scan(copies[0] if self.series_uid is None else folder, copies, self.series_uid, self.geometry)

    def sha256(self) -> str:
        """SHA-256 of the file, or of the series' files (sorted by name, each file's digest in turn)."""
        if len(self.files) == 1:
            return file_sha256(self.files[0])
        digest = hashlib.sha256()
        for path in sorted(self.files):
            digest.update(file_sha256(path).encode())
        return digest.hexdigest()


def dicom_series(folder: Path) -> dict[str, list[Path]]:
    """The DICOM series under ``folder`` (ITK's GDCM scan, sub-folders included): UID -> files."""
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetRecursive(True)
    names.SetDirectory(str(folder))
    return {str(uid): [Path(p) for p in names.GetFileNames(uid)] for uid in names.GetSeriesUIDs()}


def series_geometry(folder: Path, files: list[Path]) -> Geometry:
    """The grid of a DICOM series from its files' headers (pydicom, no pixel data), refused with
    :class:`InputError` naming ``folder`` when its slices cannot make one volume: a slice without
    position or orientation, mixed orientations or sizes, two slices at one position, a missing
    slice, or uneven slice spacing. A single (multi-frame) file is read by ITK as it is."""
    import pydicom

    if len(files) == 1:
        return read_geometry(files[0])
    headers = []
    for file in files:
        try:
            headers.append(pydicom.dcmread(file, stop_before_pixels=True))
        except Exception as err:
            raise InputError(f"{file}: not a readable DICOM file ({first_line(err)})") from err
    try:
        orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
        sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
        pixel = [float(v) for v in headers[0].PixelSpacing]
    except (AttributeError, TypeError, ValueError) as err:
        raise InputError(f"{folder}: a slice has no usable position, orientation or pixel spacing ({first_line(err)}); not a volume") from err
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise InputError(f"{folder}: the series mixes slice orientations; segment one orientation at a time")
    if len(sizes) > 1:
        raise InputError(f"{folder}: the series mixes slice sizes {sorted(sizes)}")
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    along = np.sort(positions @ normal)
    steps = np.diff(along)
    step = float(np.median(steps))
    if steps.min() <= SLICE_TOLERANCE * max(step, 1.0):
        raise InputError(f"{folder}: two slices at the same position ({along[int(np.argmin(steps))]:.2f} mm along the slice normal)")
    if steps.max() > 1.5 * step:
        gap = int(np.argmax(steps))
        raise InputError(f"{folder}: a slice is missing between {along[gap]:.2f} and {along[gap + 1]:.2f} mm "
                         f"(a gap of {steps[gap]:.2f} mm, slices every {step:.2f} mm)")
    if np.abs(steps - step).max() > SLICE_TOLERANCE * step:
        raise InputError(f"{folder}: uneven slice spacing, from {steps.min():.3f} to {steps.max():.3f} mm; "
                         "volumes and the resampling would be wrong")
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * pixel[1], column * pixel[0], normal * step
    rows, columns = sizes.pop()
    return Geometry((columns, rows, len(files)), 1, affine)


def find_scan(path: str | Path, series: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS) -> Scan:
    """The scan at ``path``: a file, or a folder holding DICOM series (``series`` picks one), its
    grid checked from its headers (:func:`common.transforms.geometry.check_geometry`, :func:`series_geometry`).

    Raises :class:`InputError` naming ``path`` when it does not exist, is an empty folder, holds no
    DICOM series, holds several and ``series`` is not given, does not hold ``series``, or its grid
    is refused.
    """
    path = Path(path)
    if path.is_file():
        if series is not None:
            raise InputError(f"{path}: --series applies to a folder of DICOM files, not to a file")
        geometry = read_geometry(path)
        check_geometry(path, geometry, max_voxels)
        return Scan(path, [path], None, geometry)
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    if not any(p.is_file() for p in path.rglob("*")):
        raise InputError(f"{path}: empty folder, no scan to segment")
    found = dicom_series(path)
    if not found:
        raise InputError(f"{path}: no DICOM series in this folder (a NIfTI scan is passed as the file itself)")
    listing = "; ".join(f"{uid} ({len(files)} files)" for uid, files in found.items())
    if series is None:
        if len(found) > 1:
            raise InputError(f"{path}: holds {len(found)} DICOM series, choose one with --series UID: {listing}")
        series = next(iter(found))
    if series not in found:
        raise InputError(f"{path}: no DICOM series {series}; it holds: {listing}")
    geometry = series_geometry(path, found[series])
    check_geometry(path, geometry, max_voxels)
    return Scan(path, found[series], series, geometry)
