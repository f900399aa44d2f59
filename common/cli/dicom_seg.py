"""A DICOM Segmentation object (highdicom) of a label volume over the DICOM series it was made from:
references to the source series and its frame of reference, one segment per class (SNOMED CT
anatomy where a code exists), one frame per source slice at that slice's position."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from common.io import write_atomically

# SNOMED CT codes of the collection's classes (category, type); other names get "Tissue".
ANATOMY = {
    "csf": ("Tissue", "CerebrospinalFluid"),
    "cerebrospinal fluid": ("Tissue", "CerebrospinalFluid"),
    "grey matter": ("Tissue", "GrayMatter"),
    "gray matter": ("Tissue", "GrayMatter"),
    "white matter": ("Tissue", "WhiteMatter"),
    "brain": ("AnatomicalStructure", "Brain"),
    "vertebra": ("AnatomicalStructure", "Vertebra"),
}
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
# Type 2 patient and study attributes a SEG copies from its source: present, if only empty.
TYPE_2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "ReferringPhysicianName", "AccessionNumber", "StudyID")


def slice_labels(label: MetaTensor, source: Sequence) -> np.ndarray:
    """The label of every pixel of every source slice ``(slices, rows, columns)``: each pixel's
    position in mm (from the slice's position, orientation and pixel spacing, LPS) looked up in
    ``label`` ``(1, D, H, W)`` through its affine (RAS), nearest voxel, 0 outside."""
    volume = torch.as_tensor(label)[0].numpy()
    to_voxel = np.linalg.inv(np.asarray(label.affine, dtype=float))
    frames = []
    for ds in source:
        rows, columns = int(ds.Rows), int(ds.Columns)
        row_cosine, column_cosine = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
        r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
        lps = (np.asarray(ds.ImagePositionPatient, float)[:, None, None] + row_cosine[:, None, None] * c * column_spacing
               + column_cosine[:, None, None] * r * row_spacing)
        ras = np.einsum("ij,jrc->irc", LPS_FROM_RAS, lps)
        index = np.rint(np.einsum("ij,jrc->irc", to_voxel[:3, :3], ras) + to_voxel[:3, 3, None, None]).astype(int)
        inside = np.all((index >= 0) & (index < np.array(volume.shape)[:, None, None]), axis=0)
        frame = np.zeros((rows, columns), dtype=np.uint8)
        frame[inside] = volume[tuple(index[:, inside])]
        frames.append(frame)
    return np.stack(frames)


def segment_descriptions(class_names: Sequence[str], bundle: str, version: str) -> list:
    """One ``SegmentDescription`` per foreground class, coded with SNOMED CT where a code exists."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name=bundle, version=version, family=codes.DCM.ArtificialIntelligence)
    descriptions = []
    for number, name in enumerate(class_names[1:], start=1):
        category, kind = ANATOMY.get(name.lower(), ("Tissue", "Tissue"))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=getattr(codes.SCT, category),
            segmented_property_type=getattr(codes.SCT, kind), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ))
    return descriptions


def seg_source_problem(source_files: Sequence[Path]) -> str | None:
    """Why no DICOM SEG can be made over ``source_files``, or ``None``: a SEG here references one
    classic series, one single-frame image per slice with its position, orientation and pixel spacing."""
    import pydicom

    for path in source_files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            return f"{Path(path).name} is a multi-frame image"
        missing = [a for a in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if a not in ds]
        if missing:
            return f"{Path(path).name} has no {', '.join(missing)}"
    return None


def _with_type_2(ds):
    """``ds`` (read into memory, the file is untouched) with the type 2 attributes it lacks, empty."""
    for attribute in TYPE_2_ATTRIBUTES:
        if attribute not in ds:
            setattr(ds, attribute, "")
    return ds


def write_dicom_seg(label: MetaTensor, source_files: Sequence[Path], class_names: Sequence[str], bundle: str, version: str, path: Path) -> None:
    """Write ``path``: a labelmap-like binary DICOM Segmentation of ``label`` over the slices of
    ``source_files`` (one classic single-frame series), written atomically."""
    import highdicom as hd
    import pydicom

    source = sorted((_with_type_2(pydicom.dcmread(f)) for f in source_files), key=lambda ds: float(np.dot(
        np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)),
        np.array(ds.ImagePositionPatient, float))))
    frames = slice_labels(label, source)
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(class_names, bundle, version),
        series_instance_uid=hd.UID(), series_number=max(int(getattr(source[0], "SeriesNumber", 0) or 0), 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="attention-bundles", manufacturer_model_name=bundle,
        software_versions=version, device_serial_number="none", series_description=f"{bundle} {version} segmentation",
        omit_empty_frames=False,
    )
    write_atomically(path, lambda staging: seg.save_as(staging))
