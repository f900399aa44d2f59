"""One scan's outputs from its label volume: the segmentation on the scan's grid, an overlay picture,
a DICOM SEG for a DICOM series, and the report that names and hashes them all; and whether outputs
already in a folder are complete and verified, so that a run can skip them."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from common.cli.dicom_seg import write_dicom_seg
from common.cli.overlay import save_overlay
from common.cli.scan import Scan
from common.cli.verify import MANIFEST
from common.io import file_sha256, write_json
from common.transforms.nifti_reader import StreamingNibabelReader

REPORT = "report"
KINDS = (("seg", ".nii.gz"), ("dicom_seg", ".dcm"), ("overlay", ".png"), (REPORT, ".json"))


def output_names(name: str, dicom_seg: bool) -> dict[str, str]:
    """The file name of each output of the scan named ``name`` (a DICOM SEG only for ``dicom_seg``)."""
    return {kind: f"{name}_{'seg' if kind == 'dicom_seg' else kind}{suffix}" for kind, suffix in KINDS if dicom_seg or kind != "dicom_seg"}


def class_volumes_ml(label: MetaTensor, names: list[str]) -> dict[str, float]:
    """Volume in mL of every foreground class of ``label`` ``(1, D, H, W)``, from its affine."""
    voxel_ml = abs(float(np.linalg.det(label.affine[:3, :3].double().numpy()))) / 1000.0
    counts = torch.bincount(torch.as_tensor(label).flatten(), minlength=len(names))
    return {name: round(float(counts[i]) * voxel_ml, 3) for i, name in enumerate(names) if i > 0}


def settings_digest(overrides: dict[str, Any], backend: str) -> str:
    """SHA-256 of what, besides the scan and the weights, decides the labels: the config overrides
    and the backend."""
    return hashlib.sha256(json.dumps({"overrides": overrides, "backend": backend}, sort_keys=True, default=str).encode()).hexdigest()


def bundle_facts(folder: Path, metadata: dict[str, Any], weights: Path, weights_sha256: str) -> dict[str, Any]:
    """Name, version, intended use and checksums of the bundle that made the segmentation."""
    manifest = folder / MANIFEST
    return {
        "name": metadata["name"],
        "version": metadata["version"],
        "folder": str(folder),
        "weights": str(weights),
        "weights_sha256": weights_sha256,
        "manifest_sha256": file_sha256(manifest) if manifest.is_file() else None,
        "intended_use": metadata.get("intended_use"),
    }


def write_outputs(folder: Path, label_path: Path, scan: Scan, name: str, class_names: list[str], metadata: dict[str, Any],
                  dicom_seg: bool) -> tuple[dict[str, Path], MetaTensor]:
    """Write the scan's outputs but the report into ``folder`` (a private staging folder):
    ``label_path`` renamed to ``<name>_seg.nii.gz``, the overlay, and the DICOM SEG over ``scan``'s
    series when ``dicom_seg``. Returns every output by kind (the report's path too, not yet written)
    and the label volume."""
    outputs = {kind: folder / file for kind, file in output_names(name, dicom_seg).items()}
    os.replace(label_path, outputs["seg"])
    label = LoadImage(image_only=True, ensure_channel_first=True, dtype=None)(outputs["seg"])
    load_image = LoadImage(reader=scan.reader(), image_only=True, ensure_channel_first=True)
    load_image.register(StreamingNibabelReader())
    save_overlay(load_image(scan.source), label, class_names, outputs["overlay"], title=f"{name}: {metadata['name']} {metadata['version']}")
    if dicom_seg:
        write_dicom_seg(label, scan.files, class_names, metadata["name"], metadata["version"], outputs["dicom_seg"])
    return outputs, label


def write_report(outputs: dict[str, Path], label: MetaTensor, scan: Scan, source: str, class_names: list[str], facts: dict[str, Any]) -> None:
    """The report: the scan, the volumes, ``facts`` (bundle, device, backend, times ...) and every
    output with its checksum, written atomically to ``outputs["report"]``."""
    report = {
        "scan": {"path": source, "series_uid": scan.series_uid, "sha256": scan.sha256(), "shape": list(label.shape[1:]),
                 "spacing_mm": [round(float(s), 4) for s in label.pixdim[:3]]},
        "volumes_ml": class_volumes_ml(label, class_names),
        **facts,
        "outputs": {kind: path.name for kind, path in outputs.items() if kind != REPORT},
        "outputs_sha256": {kind: file_sha256(path) for kind, path in outputs.items() if kind != REPORT},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__},
    }
    write_json(outputs[REPORT], report)


def verified_report(folder: Path, name: str, weights_sha256: str, settings_sha256: str, scan_sha256: str | None) -> Path | None:
    """The report of ``name`` in ``folder`` when its outputs are complete and verified: made with
    these weights and settings from this scan (``scan_sha256``; ``None``: a DICOMweb series, known by
    its UID), and every output it lists present with the checksum it records; else ``None``."""
    report_path = folder / output_names(name, False)[REPORT]
    try:
        report = json.loads(report_path.read_text())
        unchanged = (report["bundle"]["weights_sha256"] == weights_sha256 and report.get("settings_sha256") == settings_sha256
                     and scan_sha256 in (None, report["scan"]["sha256"]))
        outputs = report["outputs"]
        complete = unchanged and set(outputs) == set(report["outputs_sha256"]) and all(
            (folder / file).is_file() and file_sha256(folder / file) == report["outputs_sha256"][kind] for kind, file in outputs.items())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return report_path if complete else None
