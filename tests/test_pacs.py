"""A real PACS on loopback: Debian's Orthanc with its DICOMweb plugin (``make pacs-install``), a
per-slice series uploaded to it, ``segment`` pulling it over DICOMweb and storing its DICOM SEG back,
and the SEG read back and checked against the NIfTI output. The server is stopped whatever happens."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from conftest import BUNDLES, TRAINED_BUNDLE as BUNDLE, cli, free_port, last_line, write_dicom_series
from pacs import DICOMWEB_PLUGIN, ORTHANC, Orthanc as LauncherOrthanc

USER, PASSWORD = "radiology", "not-on-the-command-line"
pytestmark = [pytest.mark.skipif(not (Path(ORTHANC).is_file() and DICOMWEB_PLUGIN.is_file()),
                                 reason="needs Debian's orthanc and orthanc-dicomweb: make pacs-install"),
              pytest.mark.xdist_group("tiny_unetr")]  # one worker trains the shared tiny weights (conftest.trained)


class Orthanc(LauncherOrthanc):
    """``make label-pacs``'s Orthanc on a free loopback port with the tests' credentials, and what the
    tests read back from it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, free_port(), USER, PASSWORD)

    def upload_series(self, folder: Path) -> None:
        """Store every ``.dcm`` file of ``folder``."""
        self.upload(sorted(folder.glob("*.dcm")))

    def series_of(self, study: str) -> list[dict]:
        """Orthanc's description of every series of the study with UID ``study``."""
        found = [item["ID"] for item in json.loads(self.rest("/tools/lookup", study.encode(), "POST")) if item["Type"] == "Study"]
        return [series for orthanc_id in found for series in json.loads(self.rest(f"/studies/{orthanc_id}/series"))]


@pytest.fixture
def pacs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path / "pacs")
    monkeypatch.setenv("DICOMWEB_USERNAME", USER)
    monkeypatch.setenv("DICOMWEB_PASSWORD", PASSWORD)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def series_volume(trained: dict[str, Path], slices: int = 16) -> np.ndarray:
    return nib.load(trained["scan"]).get_fdata().astype(np.float32)[:, :, :slices] * 1000


def test_segment_pulls_over_dicomweb_and_stores_a_seg_that_matches_its_nifti(pacs: Orthanc, trained: dict[str, Path], tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    from common.cli.dicom_seg import slice_labels

    study = pydicom.uid.generate_uid()
    series = write_dicom_series(tmp_path / "series", series_volume(trained), spacing=(1.5, 1.5, 2.5), study_uid=study)
    pacs.upload_series(tmp_path / "series")
    url = f"{pacs.url}/dicom-web"
    result = cli("segment", "--bundle", str(BUNDLES / BUNDLE), "--input", url, "--study", study, "--output", str(tmp_path / "out"),
                 "--checkpoint", str(trained["weights"]), "--upload")
    assert result.returncode == 0, result.stderr[-3000:]
    stem = series
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{stem}_{k}" for k in ("seg.nii.gz", "seg.dcm", "overlay.png", "report.json"))
    report = json.loads((tmp_path / "out" / f"{stem}_report.json").read_text())
    assert report["scan"]["path"] == f"{url}/studies/{study}/series/{series}" and PASSWORD not in json.dumps(report)

    stored = [s for s in pacs.series_of(study) if s["MainDicomTags"].get("Modality") == "SEG"]
    assert len(stored) == 1
    instance = stored[0]["Instances"][0]
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(pacs.rest(f"/instances/{instance}/file"))))
    source = [pydicom.dcmread(f) for f in sorted((tmp_path / "series").glob("*.dcm"))]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID and seg.StudyInstanceUID == study
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["CSF", "grey matter", "white matter"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "65216001"  # SNOMED CT: CSF
    nifti = nib.load(tmp_path / "out" / f"{stem}_seg.nii.gz")
    label = LoadImage(image_only=True, ensure_channel_first=True)(tmp_path / "out" / f"{stem}_seg.nii.gz")
    expected = slice_labels(label, source)  # the NIfTI label at every source pixel
    uids = [ds.SOPInstanceUID for ds in source]
    stack = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, relabel=False)
    np.testing.assert_array_equal(stack, expected)
    assert expected.any() and nifti.shape[:2] == (source[0].Columns, source[0].Rows)
    positions = [tuple(round(float(v), 3) for v in f.PlanePositionSequence[0].ImagePositionPatient) for f in seg.PerFrameFunctionalGroupsSequence]
    assert set(positions) <= {tuple(round(float(v), 3) for v in ds.ImagePositionPatient) for ds in source}


@pytest.mark.parametrize("case, problem", [
    ("missing slice", "a slice is missing between"),
    ("unknown study", "no study 1.2.3.4.5.6.7.8.9 on the server"),
    ("server down", "cannot reach the DICOMweb server"),
    ("credentials in the URL", "credentials in the URL are refused"),
])
def test_bad_input_over_dicomweb_writes_and_uploads_nothing(case: str, problem: str, pacs: Orthanc, trained: dict[str, Path], tmp_path: Path) -> None:
    import pydicom

    study = pydicom.uid.generate_uid()
    positions = [2.0 * i for i in range(12) if i != 6]
    write_dicom_series(tmp_path / "series", np.full((24, 20, 11), 500.0, dtype=np.float32), positions=positions, study_uid=study)
    pacs.upload_series(tmp_path / "series")
    url = f"{pacs.url}/dicom-web"
    if case == "unknown study":
        study = "1.2.3.4.5.6.7.8.9"
    elif case == "server down":
        url = f"http://127.0.0.1:{free_port()}/dicom-web"
    elif case == "credentials in the URL":
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{pacs.port}/dicom-web"
    before = json.loads(pacs.rest("/series"))
    result = cli("segment", "--bundle", str(BUNDLES / BUNDLE), "--input", url, "--study", study, "--output", str(tmp_path / "out"),
                 "--checkpoint", str(trained["weights"]), "--upload")
    assert result.returncode != 0
    line = last_line(result)
    assert line.startswith("error: ") and problem in line, result.stderr[-2000:]
    assert PASSWORD not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert json.loads(pacs.rest("/series")) == before


def test_every_image_series_of_a_study_is_segmented_and_stored_back(pacs: Orthanc, trained: dict[str, Path], tmp_path: Path) -> None:
    """A study with two image series, no ``--series``: each is pulled, segmented and its SEG stored,
    outputs named by series UID, and the summary lists both."""
    import pydicom

    study = pydicom.uid.generate_uid()
    volume = series_volume(trained, slices=12)
    uids = sorted(write_dicom_series(tmp_path / name, data, study_uid=study) for name, data in (("a", volume), ("b", volume[::-1].copy())))
    for name in ("a", "b"):
        pacs.upload_series(tmp_path / name)
    url = f"{pacs.url}/dicom-web"
    result = cli("segment", "--bundle", str(BUNDLES / BUNDLE), "--input", url, "--study", study, "--output", str(tmp_path / "out"),
                 "--checkpoint", str(trained["weights"]), "--upload")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["summary.csv", *(f"{uid}_{kind}" for uid in uids for kind in ("seg.nii.gz", "seg.dcm", "overlay.png", "report.json"))])
    rows = (tmp_path / "out" / "summary.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in rows] == [[f"{url}/studies/{study}/series/{uid}", "done"] for uid in uids]
    stored = [s for s in pacs.series_of(study) if s["MainDicomTags"].get("Modality") == "SEG"]
    assert len(stored) == 2
