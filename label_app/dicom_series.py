"""A NIfTI volume as a classic DICOM series (one MR or CT image per slice), its geometry taken from
the NIfTI affine, so that a PACS, a viewer and ``segment`` see the scan the bundles were trained on.
Works with pydicom 2 (MONAI Label's environment) and 3."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
STORED_MAX = 4095  # 12 bits stored


def slice_dataset(pixels: np.ndarray, sop_class: str, uids: tuple[str, str, str], modality: str,
                  patient: str) -> pydicom.Dataset:
    """One image of a series: ``pixels`` ``(columns, rows)`` as 12-bit unsigned values, with its file
    meta, SOP class, ``uids`` (study, series, frame of reference), modality and patient; the caller
    adds the geometry and numbering."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False  # pydicom 2 needs them; 3 takes the transfer syntax
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, patient
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(pixels.T).tobytes()
    return ds


def write_series(image: str | Path, folder: str | Path, study_uid: str, patient: str, modality: str = "MR",
                 description: str = "", series_number: int = 1) -> tuple[str, list[Path]]:
    """Write the 3D NIfTI ``image`` into ``folder`` as one series of study ``study_uid``: slice ``k``
    is the NIfTI's ``[:, :, k]``, its rows along the second array axis and its columns along the
    first, positions and orientation from the affine (RAS to DICOM's LPS), intensities as 12-bit
    values with the rescale slope that gives the NIfTI's back. Returns the series UID and the files.
    """
    volume = nib.load(str(image))
    data = np.asarray(volume.dataobj, dtype=np.float64)
    if data.ndim != 3:
        raise ValueError(f"{image}: a DICOM series is written from a 3D volume, this one has shape {data.shape}")
    affine = np.asarray(volume.affine, dtype=float)
    lps = LPS_FROM_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    low, high = float(data.min()), float(data.max())
    slope = (high - low) / STORED_MAX if high > low else 1.0
    pixels = np.round((data - low) / slope).astype(np.uint16)
    series_uid, frame_uid = generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(data.shape[2]):
        ds = slice_dataset(pixels[:, :, k], sop_class, (study_uid, series_uid, frame_uid), modality, patient)
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = "1", series_number, k + 1, description
        ds.ImagePositionPatient = [float(v) for v in LPS_FROM_RAS @ (affine @ [0.0, 0.0, k, 1.0])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]])]
        ds.PixelSpacing, ds.SliceThickness = [float(spacing[1]), float(spacing[0])], float(spacing[2])
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{low:.10g}"
        path = folder / f"{k:05d}.dcm"
        pydicom.dcmwrite(str(path), ds, write_like_original=False)
        files.append(path)
    return series_uid, files
