"""What one ``segment`` run segments: a scan, a folder of scans, a text file listing scans, every
series of a DICOM folder, or every image series of a DICOMweb study. Each is a :class:`Job` with the
stem of its outputs, unique within the run; a job whose scan turns out to be bad fails on its own
when it is read, so the others go on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.cli.dicomweb import checked_url, image_series, retrieve_series
from common.cli.scan import IMAGE_SUFFIXES, Scan, dicom_series, find_scan, stem, uid_in_name
from common.errors import InputError

LIST_SUFFIX = ".txt"  # a text file of scans, one path a line (relative paths start at the file's folder)
VOLUME_SUFFIXES = tuple(suffix for suffix in IMAGE_SUFFIXES if suffix != ".dcm")  # one file, one volume


@dataclass(frozen=True)
class Job:
    """One scan of a run.

    Attributes:
        source: the scan as the user named it (a file, a folder, or a DICOMweb series address), for
            messages and the report.
        name: the stem of its outputs (``<name>_seg.nii.gz`` ...), unique within the run.
        path: the local file or folder (``None`` for a DICOMweb series).
        series: the DICOM series instance UID, for a series of a folder or of a study.
        study: ``(server address, study UID)`` of a DICOMweb series.
    """

    source: str
    name: str
    path: Path | None = None
    series: str | None = None
    study: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        """The scan, one per job: the source, and for a series of a local folder its UID."""
        return f"{self.source} (series {self.series})" if self.series and self.study is None else self.source

    def local_scan(self) -> Scan:
        """The local scan, its headers checked (:func:`common.cli.scan.find_scan`)."""
        return find_scan(self.path, self.series)

    def staged(self, folder: Path) -> Scan:
        """The scan as a private copy in ``folder`` (pulled from the server for a DICOMweb series),
        its headers checked; what is then read and hashed is that copy."""
        if self.study is None:
            return self.local_scan().staged(folder)
        url, study = self.study
        retrieve_series(url, study, self.series, folder)
        return find_scan(folder, self.series)


def unique_names(paths: list[Path | None], names: list[str]) -> list[str]:
    """``names`` made unique: a name shared by several local files gains its parent folder's name
    (``a/scan`` -> ``a_scan``); one still taken gains ``_2``, ``_3`` ... in order."""
    shared = {name for name in names if names.count(name) > 1}
    names = [f"{path.parent.name}_{name}" if name in shared and path is not None else name for path, name in zip(paths, names)]
    originals, taken, unique = set(names), set(), []
    for name in names:
        candidate, number = name, 2
        while candidate in taken or (candidate != name and candidate in originals):
            candidate, number = f"{name}_{number}", number + 1
        taken.add(candidate)
        unique.append(candidate)
    return unique


def folder_jobs(folder: Path) -> list[tuple[str, Path, str | None]]:
    """``(name, path, series)`` of every volume file at the top of ``folder`` and every DICOM series
    under it."""
    volume = lambda p: p.name.lower().endswith(VOLUME_SUFFIXES)
    files = sorted(p for p in folder.iterdir() if p.is_file() and volume(p) and not p.name.startswith("."))
    others = any(p.is_file() and not volume(p) for p in folder.rglob("*"))  # only those can be DICOM
    return [(stem(p), p, None) for p in files] + [(f"{folder.name}_{uid_in_name(uid)}", folder, uid) for uid in sorted(dicom_series(folder) if others else [])]


def listed_paths(list_file: Path) -> list[Path]:
    """The paths a list file names, one a line; blank lines and ``#`` comments skipped."""
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{list_file}: cannot read the list of scans ({err})") from err
    paths = [list_file.parent / line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not paths:
        raise InputError(f"{list_file}: lists no scan (one path a line)")
    return paths


def remote_jobs(url: str, study: str, series: str | None) -> tuple[list[Job], bool]:
    """The image series of a DICOMweb study (``series`` alone when given), and whether they are one scan."""
    url = checked_url(url)
    found = image_series(url, study)
    listing = "; ".join(f"{uid} ({description})" for uid, description in found.items())
    if series is not None and series not in found:
        raise InputError(f"{url}: study {study} has no image series {series}; it holds: {listing}")
    if not found:
        raise InputError(f"{url}: study {study} holds no image series")
    chosen = [series] if series is not None else sorted(found)
    jobs = [Job(f"{url}/studies/{study}/series/{uid}", uid_in_name(uid), None, uid, (url, study)) for uid in chosen]
    return jobs, len(jobs) == 1


def local_jobs(path: Path, series: str | None) -> tuple[list[Job], bool]:
    """The scans at ``path``, and whether they are one scan (a run of one keeps the one-scan rules:
    an error stops it, nothing else is written)."""
    if path.is_file() and path.name.lower().endswith(LIST_SUFFIX):
        if series is not None:
            raise InputError(f"{path}: --series picks a series of a DICOM folder, not of a list of scans")
        found = []
        for entry in listed_paths(path):
            found += folder_jobs(entry) if entry.is_dir() else [(stem(entry), entry, None)]
        return jobs_of(found), False
    if not path.is_dir() or series is not None:
        scan = find_scan(path, series)
        return [Job(str(path), scan.name, path, scan.series_uid)], True
    if not any(p.is_file() for p in path.rglob("*")):
        raise InputError(f"{path}: empty folder, no scan to segment")
    found = folder_jobs(path)
    if not found:
        raise InputError(f"{path}: no scans in this folder (NIfTI, MHA, NRRD files or DICOM series)")
    return jobs_of(found), len(found) == 1 and found[0][2] is not None


def jobs_of(found: list[tuple[str, Path, str | None]]) -> list[Job]:
    """Jobs of ``(name, path, series)``, their names made unique."""
    names = unique_names([path if series is None else None for _, path, series in found], [name for name, _, _ in found])
    return [Job(str(path), name, path, series) for name, (_, path, series) in zip(names, found)]


def find_jobs(input: str, series: str | None = None, study: str | None = None, remote: bool = False) -> tuple[list[Job], bool]:
    """Every scan of ``input`` as a job, and whether the run is of one scan.

    Args:
        input: a scan file, a folder (its volume files and DICOM series), a ``.txt`` list of scans,
            or (``remote``) a DICOMweb server's address.
        series: one DICOM series of a folder or study instead of all of them.
        study: the study on the DICOMweb server.
        remote: ``input`` is a DICOMweb server.
    """
    if remote:
        return remote_jobs(input, study, series)
    return local_jobs(Path(input), series)
