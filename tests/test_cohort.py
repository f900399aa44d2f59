"""Many scans in one ``segment`` run: a folder with a broken file among good ones, a list file, names
that never collide, and a run that resumes where an interrupted one stopped."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.cli import cohort
from common.cli.cohort import unique_names
from common.cli.scan import Scan
from conftest import BUNDLES, TRAINED_BUNDLE, cli, last_line

pytestmark = pytest.mark.xdist_group("tiny_unetr")  # one worker trains the shared tiny weights (conftest.trained)
OUTPUTS = ("overlay.png", "report.json", "seg.nii.gz")


def segment(trained: dict[str, Path], input: Path, output: Path, *extra: str):
    return cli("segment", "--bundle", str(BUNDLES / TRAINED_BUNDLE), "--input", str(input), "--output", str(output),
               "--checkpoint", str(trained["weights"]), *extra)


def summary(output: Path) -> list[dict[str, str]]:
    with open(output / "summary.csv", newline="") as table:
        return list(csv.DictReader(table))


def test_a_folder_with_a_broken_file_among_good_ones(trained: dict[str, Path], tmp_path: Path) -> None:
    """Every good scan gets its outputs; the broken one gets a one-line error and nothing in the
    output; the summary says so and the exit status is not zero."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("first", "second"):
        shutil.copy2(trained["scan"], scans / f"{name}.nii.gz")
    (scans / "broken.nii.gz").write_bytes(trained["scan"].read_bytes()[:3000])
    (scans / "notes.txt").write_text("not a scan\n")
    result = segment(trained, scans, tmp_path / "out")
    assert result.returncode != 0
    assert last_line(result) == f"error: {tmp_path / 'out' / 'summary.csv'}: 1 of 3 scans failed ({scans / 'broken.nii.gz'})"
    assert f"error: {scans / 'broken.nii.gz'}: cannot be read as an image" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["summary.csv", *(f"{name}_{kind}" for name in ("first", "second") for kind in OUTPUTS)])
    rows = summary(tmp_path / "out")
    assert [(row["scan"], row["status"]) for row in rows] == [
        (str(scans / "broken.nii.gz"), "failed"), (str(scans / "first.nii.gz"), "done"), (str(scans / "second.nii.gz"), "done")]
    assert rows[1]["output"] == "first_report.json" and "cannot be read as an image" in rows[0]["output"]
    assert all(float(row["seconds"]) >= 0 for row in rows) and "scans" in result.stderr  # the progress bar over scans
    first, second = (np.asarray(nib.load(tmp_path / "out" / f"{name}_seg.nii.gz").dataobj) for name in ("first", "second"))
    assert np.array_equal(first, second)  # the same scan, the same labels, whichever its turn


def test_a_list_file_names_scans_whose_outputs_never_collide(trained: dict[str, Path], tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy2(trained["scan"], tmp_path / folder / "scan.nii.gz")
    (tmp_path / "cohort.txt").write_text("# two scans of the same name\na/scan.nii.gz\n\nb/scan.nii.gz\n")
    result = segment(trained, tmp_path / "cohort.txt", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["summary.csv", *(f"{name}_{kind}" for name in ("a_scan", "b_scan") for kind in OUTPUTS)])
    assert json.loads((tmp_path / "out" / "b_scan_report.json").read_text())["scan"]["path"] == str(tmp_path / "b" / "scan.nii.gz")
    assert unique_names([Path("x/s.nii"), Path("x/s.nii"), Path("y/s_2.nii"), None], ["s", "s", "s_2", "s"]) == ["x_s", "x_s_2", "s_2", "s"]


@pytest.mark.slow
def test_a_run_resumes_where_it_stopped(trained: dict[str, Path], tmp_path: Path) -> None:
    """Outputs complete and verified by their report's checksums are kept; a scan whose outputs are
    missing or were changed is segmented again."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("first", "second", "third"):
        shutil.copy2(trained["scan"], scans / f"{name}.nii.gz")
    assert segment(trained, scans, tmp_path / "out").returncode == 0
    kept = (tmp_path / "out" / "first_seg.nii.gz").stat().st_mtime_ns
    (tmp_path / "out" / "second_report.json").unlink()  # interrupted before its report
    (tmp_path / "out" / "third_overlay.png").write_bytes(b"not the overlay that was written")
    result = segment(trained, scans, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["status"] for row in summary(tmp_path / "out")] == ["skipped", "done", "done"]
    assert (tmp_path / "out" / "first_seg.nii.gz").stat().st_mtime_ns == kept
    assert (tmp_path / "out" / "third_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    changed_settings = segment(trained, scans, tmp_path / "out", "--backend", "auto")  # other settings: made again
    assert [row["status"] for row in summary(tmp_path / "out")] == ["done", "done", "done"], changed_settings.stderr[-2000:]


def test_a_series_uid_from_a_file_or_a_server_never_names_a_path_outside_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Scan(Path("/data/study"), series_uid="1.2.840.113619.2.55").name == "study_1.2.840.113619.2.55"
    assert Scan(Path("/data/study"), series_uid="1.2/../../models/model.pt").name == "study_1.2_.._.._models_model.pt"
    monkeypatch.setattr(cohort, "checked_url", lambda url: url)
    monkeypatch.setattr(cohort, "image_series", lambda url, study: {"../../weights": "MR, series 1", "1.2.3": "MR, series 2"})
    jobs, _ = cohort.find_jobs("http://pacs/dicom-web", study="1.2", remote=True)
    assert [(job.name, job.series) for job in jobs] == [(".._.._weights", "../../weights"), ("1.2.3", "1.2.3")]
