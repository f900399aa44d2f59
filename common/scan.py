"""Finding the scan to segment: one NIfTI file, or one DICOM series of a folder (read by ITK)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from monai.data import ITKReader

from common.errors import InputError
from common.io import file_sha256

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".dcm")


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

    @property
    def name(self) -> str:
        """File-name stem of the outputs: the file's name without its image suffix, or the folder's name."""
        if self.series_uid is not None:
            return self.path.name
        for suffix in IMAGE_SUFFIXES:
            if self.path.name.lower().endswith(suffix):
                return self.path.name[: -len(suffix)]
        return self.path.stem

    @property
    def source(self) -> Path:
        """What ``LoadImage`` reads: the NIfTI file, or the folder holding the series' files."""
        return self.path if self.series_uid is None else self.files[0].parent

    def reader(self) -> ITKReader | None:
        """The reader for ``LoadImage``: ITK restricted to this series, or ``None`` (by suffix)."""
        return None if self.series_uid is None else ITKReader(series_name=self.series_uid)

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


def find_scan(path: str | Path, series: str | None = None) -> Scan:
    """The scan at ``path``: a file, or a folder holding DICOM series (``series`` picks one).

    Raises :class:`InputError` naming ``path`` when it does not exist, is an empty folder, holds no
    DICOM series, holds several and ``series`` is not given, or does not hold ``series``.
    """
    path = Path(path)
    if path.is_file():
        if series is not None:
            raise InputError(f"{path}: --series applies to a folder of DICOM files, not to a file")
        return Scan(path, [path])
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
    return Scan(path, found[series], series)
