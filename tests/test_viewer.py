"""The annotator's stack in a real browser: ``label_app/pacs.py`` (``make label-pacs``) starts Orthanc with
the data set's held-out scan as a DICOM series and MONAI Label serving a bundle from it; headless
Chromium opens the OHIF viewer MONAI Label ships, finds the study, opens it in the MONAI Label mode,
runs the bundle and stores the labelmap as the series' final label, which MONAI Label writes to the
PACS as a DICOM SEG; read back, it equals ``segment``'s output for the same weights. Bad paths: no
weights, Orthanc's port taken, the PACS down.

Needs the MONAI Label environment (``LABEL_PYTHON``), Orthanc and Chromium: ``make test-label``
installs them all.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from monai.transforms import LoadImage

from conftest import BUNDLES, REPO_ROOT, TRAINED_BUNDLE, cli, free_port, make_dataset

LABEL_PYTHON = os.environ.get("LABEL_PYTHON")
sys.path.insert(0, str(REPO_ROOT / "label_app"))
from pacs import DICOMWEB_PLUGIN, ORTHANC, USER  # noqa: E402

from ohif_viewer import CHROMIUM, VIEWPORT, launch, open_study, run_model, save_final_label  # noqa: E402

pytestmark = pytest.mark.skipif(not (LABEL_PYTHON and Path(ORTHANC).is_file() and DICOMWEB_PLUGIN.is_file() and Path(CHROMIUM).is_file()),
                                reason="needs the MONAI Label environment, Orthanc and Chromium: make test-label")
START_TIMEOUT = 400


def tiny_bundles(root: Path, weights: Path | None) -> Path:
    """``unetr``'s configs and scripts under ``root``, with ``weights`` as its ``models/model.pt``."""
    bundle = root / TRAINED_BUNDLE
    shutil.copytree(BUNDLES / TRAINED_BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "eval", "__pycache__"))
    if weights is not None:
        (bundle / "models").mkdir()
        shutil.copy2(weights, bundle / "models" / "model.pt")
    return root


def launcher(dataset: Path, work: Path, bundles: Path, label_port: int, orthanc_port: int) -> subprocess.Popen:
    """``label_app/pacs.py`` as ``make label-pacs`` runs it, in its own session."""
    command = [LABEL_PYTHON, str(REPO_ROOT / "label_app" / "pacs.py"), "--dataset_dir", str(dataset), "--work_dir", str(work),
               "--label_port", str(label_port), "--orthanc_port", str(orthanc_port), "--bundles", str(bundles)]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_viewer(process: subprocess.Popen) -> tuple[str, str]:
    """The viewer's address the launcher prints, and everything it printed once both servers run."""
    printed, deadline = [], time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            pytest.fail(f"label_app/pacs.py exited {process.returncode}:\n{''.join(printed)[-3000:]}")
        printed.append(line)
        if line.startswith("Ctrl-C stops both."):
            viewer = next(line for line in printed if line.startswith("viewer (OHIF): "))
            return viewer.split()[2].removesuffix("/ohif/"), "".join(printed)
    pytest.fail(f"no viewer address within {START_TIMEOUT} s:\n{''.join(printed)[-3000:]}")


@pytest.fixture(scope="module")
def stack(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("viewer")
    dataset = make_dataset(root / "data")
    bundles = tiny_bundles(root / "bundles", trained["weights"])
    orthanc_port = free_port()
    process = launcher(dataset, root / "work", bundles, free_port(), orthanc_port)
    try:
        url, printed = wait_for_viewer(process)
        password = json.loads((root / "work" / "orthanc" / "orthanc.json").read_text())["RegisteredUsers"][USER]
        yield {"url": url, "printed": printed, "pacs": f"http://127.0.0.1:{orthanc_port}", "password": password, "root": root,
               "weights": trained["weights"], "bundles": bundles}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the launcher stops both servers
            process.wait(timeout=120)


def pacs_get(stack: dict, path: str) -> bytes:
    import requests

    answer = requests.get(f"{stack['pacs']}{path}", auth=(USER, stack["password"]), timeout=60)
    answer.raise_for_status()
    return answer.content


def test_the_stack_serves_on_loopback_with_a_password(stack: dict) -> None:
    import requests

    assert stack["url"].startswith("http://127.0.0.1:") and f"bundles served: {TRAINED_BUNDLE}" in stack["printed"]
    assert requests.get(f"{stack['pacs']}/system", timeout=30).status_code == 401  # no password, no answer
    listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
    label_port = stack["url"].rsplit(":", 1)[1]
    assert f"127.0.0.1:{label_port} " in listening and f"0.0.0.0:{label_port} " not in listening


def test_an_annotator_segments_the_study_in_the_viewer_and_the_label_reaches_the_pacs(stack: dict, tmp_path: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Study list, viewer, Run, labelmap with the bundle's classes, final label stored as DICOM SEG
    on the PACS, equal voxel for voxel to ``segment`` on the same series with the same weights."""
    import highdicom as hd
    import pydicom
    from playwright.sync_api import sync_playwright

    from common.cli.dicom_seg import slice_labels

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            open_study(page, stack["url"], "CASE1")
            labelmap = run_model(page, TRAINED_BUNDLE)
            page.screenshot(path=str(stack["root"] / "viewer.png"))
            names = [segment["label"] for segment in labelmap["segments"]]
            assert names == ["csf", "grey matter", "white matter"]  # the bundle's classes, as MONAI Label names them
            saved = save_final_label(page, stack["url"], names)
        finally:
            browser.close()
    assert saved["status"] == 200, saved["text"]
    assert (stack["root"] / "viewer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    series = [json.loads(pacs_get(stack, f"/series/{s}")) for s in json.loads(pacs_get(stack, "/series"))]
    (stored,) = [s for s in series if s["MainDicomTags"].get("Modality") == "SEG"]
    (scan,) = [s for s in series if s["MainDicomTags"].get("SeriesInstanceUID") == saved["series"]]
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(pacs_get(stack, f"/instances/{stored['Instances'][0]}/file"))))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == saved["series"]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == names
    source = [pydicom.dcmread(io.BytesIO(pacs_get(stack, f"/instances/{i}/file"))) for i in scan["Instances"]]
    from_viewer = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID for ds in source], combine_segments=True,
                                                    relabel=False, ignore_spatial_locations=True)

    study = scan["ParentStudy"]
    study_uid = json.loads(pacs_get(stack, f"/studies/{study}"))["MainDicomTags"]["StudyInstanceUID"]
    monkeypatch.setenv("DICOMWEB_USERNAME", USER)
    monkeypatch.setenv("DICOMWEB_PASSWORD", stack["password"])
    result = cli("segment", "--bundle", str(stack["bundles"] / TRAINED_BUNDLE), "--input", f"{stack['pacs']}/dicom-web", "--study", study_uid,
                 "--series", saved["series"], "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    label = LoadImage(image_only=True, ensure_channel_first=True)(tmp_path / "out" / f"{saved['series']}_seg.nii.gz")
    expected = slice_labels(label, source)
    assert expected.any() and np.array_equal(from_viewer, expected)


def test_no_bundle_with_weights_says_how_to_get_them(tmp_path: Path) -> None:
    process = launcher(make_dataset(tmp_path / "data"), tmp_path / "work", tiny_bundles(tmp_path / "bundles", None), free_port(), free_port())
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert f"error: {tmp_path / 'bundles'}: no bundle has weights to serve; train one first, e.g. make demo BUNDLE=unetr" in output
    assert f"{TRAINED_BUNDLE}: not served for inference, no {tmp_path / 'bundles' / TRAINED_BUNDLE / 'models' / 'model.pt'}" in output


def test_orthanc_that_cannot_start_is_named_with_its_log(trained: dict[str, Path], tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = launcher(make_dataset(tmp_path / "data"), tmp_path / "work", tiny_bundles(tmp_path / "bundles", trained["weights"]), free_port(), port)
        output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert f"error: http://127.0.0.1:{port}: Orthanc stopped at start (port {port} in use?); its log {tmp_path / 'work' / 'orthanc' / 'orthanc.log'}" in output


def test_monai_label_with_the_pacs_down_says_so(trained: dict[str, Path], tmp_path: Path) -> None:
    pacs = f"http://127.0.0.1:{free_port()}/dicom-web"
    bundles = tiny_bundles(tmp_path / "bundles", trained["weights"])
    command = [LABEL_PYTHON, "-m", "monailabel.main", "start_server", "--app", str(REPO_ROOT / "label_app"), "--studies", pacs,
               "--host", "127.0.0.1", "--port", str(free_port()), "--conf", "bundles", str(bundles)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert result.returncode != 0
    assert f"{pacs}: the PACS does not answer" in result.stdout + result.stderr
