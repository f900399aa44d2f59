"""A real MONAI Label server on loopback serving every bundle: info, inference, one training round.

Needs the MONAI Label environment (``make test-label`` builds ``.venv-label`` and sets
``LABEL_PYTHON``); the server runs there, this test in the main environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.bundle import load_network
from conftest import (BUNDLE_NAMES, BUNDLES, REPO_ROOT, TINY_OVERRIDES, build_network, free_port, make_dataset, recorded_settings, run_bundle,
                      stop_process_group, train_overrides, write_volume)

LABEL_PYTHON = os.environ.get("LABEL_PYTHON")
pytestmark = pytest.mark.skipif(not LABEL_PYTHON, reason="needs the MONAI Label environment: make test-label")

START_TIMEOUT = 300
TRAIN_TIMEOUT = 600
TRAINED_BUNDLE = "attention_unet"
UNFIT = "unfit_weights"
KEPT = "kept_weights"  # holds well-trained weights that a one-epoch round from scratch must not replace
OTHER_CLASSES = "other_classes"
CLASSES = {"csf": 1, "grey matter": 2, "white matter": 3}
# What the app gets through its `overrides` setting: run sizes only; the networks' sizes come from the weights.
RUN_OVERRIDES = {"num_samples": 2, "sw_batch_size": 2, "num_workers": 0, "val_interval": 1}
# An unlabelled study on a grid unlike the training data's: flipped, permuted, anisotropic, shifted.
OBLIQUE_AFFINE = np.array([[-1.5, 0, 0, 40.0], [0, 0, 2.5, -10.0], [0, 1.2, 0, 5.0], [0, 0, 0, 1]])


def tiny_bundle(source: str, folder: Path, weights_sizes: dict | None = None, classes: list[str] | None = None) -> None:
    """Configs and scripts of bundle ``source`` copied to ``folder``, with ``configs/run.json`` (run
    sizes) and freshly initialised tiny ``models/model.pt`` that records its settings as training
    does (with other ``classes`` when given), its tensors of the sizes ``weights_sizes`` changes."""
    shutil.copytree(BUNDLES / source, folder, ignore=shutil.ignore_patterns("models", "runs", "eval", "__pycache__"))
    (folder / "configs" / "run.json").write_text(json.dumps(RUN_OVERRIDES))
    (folder / "models").mkdir()
    settings = recorded_settings(source, **({"class_names": classes, "num_classes": len(classes)} if classes else {}))
    weights = build_network(source, num_classes=settings["num_classes"], **(weights_sizes or {})).state_dict()
    torch.save({"model": weights, "metadata": {"bundle": source, "settings": settings}}, folder / "models" / "model.pt")


def predict_background_only(trained: Path, weights: Path) -> None:
    """``trained``'s weights with their classifier zeroed, written over ``weights`` (same network and
    settings): every voxel's logits tie, the arg-max is background and the validation Dice 0, so any
    round that predicts some foreground right is better."""
    checkpoint = torch.load(trained, weights_only=True)
    for key, tensor in checkpoint["model"].items():
        if key.startswith("out."):
            tensor.zero_()
    checkpoint["metadata"] = torch.load(weights, weights_only=True)["metadata"]
    torch.save(checkpoint, weights)


def tiny_bundles(root: Path, dataset: Path) -> Path:
    """Every bundle, tiny, under ``root`` (``TRAINED_BUNDLE`` with ``KEPT``'s weights, classifier
    zeroed, and ``KEPT``'s learning rate 0.01); ``UNFIT``, whose weights are twice as wide as they
    say; ``OTHER_CLASSES``, trained (it says) for other classes than the bundle's defaults; and
    ``KEPT``, with weights trained for 30 epochs on ``dataset`` (the studies' data, split as the app
    splits it)."""
    for name in BUNDLE_NAMES:
        tiny_bundle(name, root / name)
    tiny_bundle("attention_unet", root / UNFIT, {"feature_size": 2 * TINY_OVERRIDES["attention_unet"]["feature_size"]})
    tiny_bundle("attention_unet", root / OTHER_CLASSES, classes=["background", "vertebral body", "vertebral arch"])
    tiny_bundle("attention_unet", root / KEPT)
    (root / KEPT / "models" / "model.pt").unlink()
    run_bundle("attention_unet", ["train.json"], train_overrides("attention_unet", dataset, root / KEPT, max_epochs=30, val_interval=10,
                                                                 learning_rate=0.01))
    for leftover in [*(root / KEPT / "models").glob("checkpoint_epoch=*.pt"), root / KEPT / "runs"]:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    predict_background_only(root / KEPT / "models" / "model.pt", root / TRAINED_BUNDLE / "models" / "model.pt")
    (root / TRAINED_BUNDLE / "configs" / "run.json").write_text(json.dumps({**RUN_OVERRIDES, "learning_rate": 0.01}))
    return root


CODE_LIKE_STUDY = '$print("INJECTED")or"x"#1'  # MONAI reads '$' as code and '#' as a key separator


def datastore(root: Path, dataset: Path) -> Path:
    """The data set as studies with final labels (through ``label_app/studies.py``), plus one
    unlabelled study ``oblique``, and the first study again under a name that looks like code."""
    studies = write_studies(dataset, root / "studies")
    image = nib.load(dataset / "imagesTr" / "case0.nii.gz").get_fdata(dtype=np.float32)
    write_volume(studies / "oblique.nii.gz", image[:, :30, 4:], OBLIQUE_AFFINE)
    rng = np.random.RandomState(0)
    write_volume(studies / "whole_head.nii.gz", rng.uniform(5, 100, size=(100, 120, 100)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    shutil.copy2(studies / "case0.nii.gz", studies / f"{CODE_LIKE_STUDY}.nii.gz")
    shutil.copy2(studies / "labels" / "final" / "case0.nii.gz", studies / "labels" / "final" / f"{CODE_LIKE_STUDY}.nii.gz")
    return studies


def write_studies(dataset: Path, studies: Path) -> Path:
    """``label_app/studies.py`` run in the MONAI Label environment, as ``make label`` runs it."""
    command = [LABEL_PYTHON, str(REPO_ROOT / "label_app" / "studies.py"), "--dataset_dir", str(dataset), "--studies_dir", str(studies)]
    subprocess.run(command, check=True, cwd=REPO_ROOT, timeout=120, capture_output=True)
    return studies


def request(url: str, method: str = "GET", body: dict | None = None, timeout: float = 120) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers), timeout=timeout) as response:
        return response.read()


class Server:
    """``monailabel start_server`` with the app of this repository, stopped (its whole process
    group) by :meth:`stop` whatever state it is in."""

    def __init__(self, studies: Path | str, bundles: Path, log: Path, conf: dict[str, str] | None = None, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log
        command = [
            LABEL_PYTHON, "-m", "monailabel.main", "start_server", "--app", str(REPO_ROOT / "label_app"),
            "--studies", str(studies), "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
            "--conf", "bundles", str(bundles), "--conf", "overrides", "run.json",
        ]
        for key, value in (conf or {}).items():
            command += ["--conf", key, value]
        with open(log, "w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
                                            env={**os.environ, **(env or {})})

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def call(self, path: str, method: str = "GET", body: dict | None = None, timeout: float = 120) -> bytes:
        """``path`` of the server's API; an HTTP error fails the test with the server's log."""
        try:
            return request(f"{self.url}{path}", method, body, timeout)
        except urllib.error.HTTPError as err:
            pytest.fail(f"{method} {path}: HTTP {err.code} {err.read()[:500]!r}\n{self.log_tail()}")

    def wait_for_info(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                return json.loads(request(f"{self.url}/info/", timeout=10))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        pytest.fail(f"no answer from {self.url}/info/ within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        stop_process_group(self.process)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict, Path, Path]]:
    root = tmp_path_factory.mktemp("label")
    dataset = make_dataset(root / "data")
    bundles = tiny_bundles(root / "bundles", dataset)
    studies = datastore(root, dataset)
    server = Server(studies, bundles, root / "server.log")
    try:
        yield server, server.wait_for_info(START_TIMEOUT), studies, bundles
    finally:
        server.stop()


def test_info_lists_every_bundle_with_the_labels_of_its_weights(served) -> None:
    _, info, _, _ = served
    assert sorted(info["models"]) == sorted([*BUNDLE_NAMES, OTHER_CLASSES, KEPT])
    assert sorted(info["trainers"]) == sorted([*BUNDLE_NAMES, UNFIT, OTHER_CLASSES, KEPT])
    for name in BUNDLE_NAMES:
        assert info["models"][name]["labels"] == CLASSES, name
    assert info["models"][OTHER_CLASSES]["labels"] == {"vertebral body": 1, "vertebral arch": 2}


def test_weights_that_do_not_fit_are_refused_by_name(served) -> None:
    server, info, _, bundles = served
    assert UNFIT not in info["models"]
    assert f"{UNFIT}: not served for inference: {bundles / UNFIT / 'models' / 'model.pt'}: the weights do not fit" in server.log.read_text()


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_infer_returns_a_label_volume_on_the_study_grid(served, bundle: str, tmp_path: Path) -> None:
    server, _, studies, _ = served
    label_file = tmp_path / "label.nii.gz"
    label_file.write_bytes(server.call(f"/infer/{bundle}?image=oblique&output=image", method="POST", timeout=300))
    label, study = nib.load(label_file), nib.load(studies / "oblique.nii.gz")
    assert label.shape == study.shape
    np.testing.assert_allclose(label.affine, study.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, *CLASSES.values()}


def train_round(server: Server, bundle: str, params: dict) -> None:
    """One training round of ``bundle`` through ``/train/``, waited for until it is done."""
    server.call(f"/train/{bundle}", method="POST", body=params)
    deadline = time.monotonic() + TRAIN_TIMEOUT
    status: dict = {}
    while time.monotonic() < deadline:
        status = json.loads(server.call("/train/"))
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(3)
    assert status.get("status") == "DONE", f"{status}\n{server.log_tail()}"


def test_a_whole_head_breaks_the_brain_contract_here_too(served) -> None:
    """The same check as ``segment`` and ``inference.json``: a 9.6 L non-zero volume is refused."""
    server, _, _, _ = served
    with pytest.raises(urllib.error.HTTPError) as refused:
        request(f"{server.url}/infer/{TRAINED_BUNDLE}?image=whole_head&output=image", method="POST", timeout=300)
    body = refused.value.read().decode(errors="replace")
    expected = "mL of non-zero voxels, more than 2,500 mL; the weights expect a brain-extracted T1"
    deadline = time.monotonic() + 10  # the server may log the error just after it answers
    while expected not in body + server.log_tail(200) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert expected in body + server.log_tail(200)


def test_one_training_round_rewrites_the_weights_and_they_load(served) -> None:
    """A round better than the served weights replaces them. They score 0 (see
    :func:`predict_background_only`) and the round is ``KEPT``'s recipe, 30 epochs from scratch at 0.01
    (first above 0 at epoch 7 here); freshly initialised weights were beaten, or not, by chance."""
    server, _, _, bundles = served
    weights = bundles / TRAINED_BUNDLE / "models" / "model.pt"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    train_round(server, TRAINED_BUNDLE, {"max_epochs": 30, "device": "cpu", "pretrained": False})  # otherwise 3D Slicer's defaults (20% validate)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() != before
    load_network(bundles / TRAINED_BUNDLE, weights)  # the sizes it records
    assert torch.load(weights, weights_only=True)["metadata"]["settings"] == recorded_settings(TRAINED_BUNDLE)


def test_a_round_worse_than_the_weights_already_there_keeps_them(served) -> None:
    """One epoch from scratch (at train.json's learning rate) cannot beat 30 epochs: the round is
    done, ``model.pt`` is untouched."""
    server, _, _, bundles = served
    weights = bundles / KEPT / "models" / "model.pt"
    before = weights.read_bytes()
    train_round(server, KEPT, {"max_epochs": 1, "device": "cpu", "pretrained": False})
    assert weights.read_bytes() == before
    assert f"{weights}: the weights already there score val_mean_dice" in server.log.read_text()


def test_a_study_named_like_code_is_inferred_and_trained_on_as_data(served, tmp_path: Path) -> None:
    """Its inference works, the training rounds above took it among their studies, and nothing ran."""
    from urllib.parse import quote

    server, _, studies, _ = served
    label_file = tmp_path / "label.nii.gz"
    label_file.write_bytes(server.call(f"/infer/{TRAINED_BUNDLE}?image={quote(CODE_LIKE_STUDY)}&output=image", method="POST", timeout=300))
    assert nib.load(label_file).shape == nib.load(studies / f"{CODE_LIKE_STUDY}.nii.gz").shape
    log = server.log.read_text()
    assert "INJECTED" not in [line.strip() for line in log.splitlines()]
    assert "Total Records in Dataset: 3" in log  # the rounds above trained on it with the two others


def test_studies_writer_keeps_labels_already_there(tmp_path: Path) -> None:
    studies = write_studies(make_dataset(tmp_path / "data"), tmp_path / "studies")
    assert sorted(p.name for p in studies.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]
    annotated = studies / "labels" / "final" / "case0.nii.gz"
    annotated.write_bytes(b"an annotator's label")
    write_studies(tmp_path / "data", studies)
    assert annotated.read_bytes() == b"an annotator's label"


def test_training_with_fewer_than_two_labelled_studies_is_refused_by_name() -> None:
    code = (
        "import sys; sys.path.insert(0, 'label_app'); from main import StrictBundleTrainTask; "
        f"task = StrictBundleTrainTask({str(BUNDLES / TRAINED_BUNDLE)!r}, {{}}, {{}}); "
        "task._partition_datalist([{'image': 'a.nii.gz', 'label': 'a.nii.gz'}], {})"
    )
    result = subprocess.run([LABEL_PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"InputError: {BUNDLES / TRAINED_BUNDLE}: training needs at least 2 studies with final labels" in result.stderr


def test_serving_beyond_loopback_without_authentication_is_refused(tmp_path: Path) -> None:
    """MONAI Label binds every interface unless told otherwise; the app refuses that without auth."""
    studies = tmp_path / "studies"
    studies.mkdir()
    command = [LABEL_PYTHON, "-m", "monailabel.main", "start_server", "--app", str(REPO_ROOT / "label_app"), "--studies", str(studies),
               "--port", str(free_port()), "--conf", "models", "attention_unet"]
    env = {**os.environ, "MONAI_LABEL_AUTH_ENABLE": "false"}
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=START_TIMEOUT, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "--host 0.0.0.0: the server would accept anyone who can reach it" in output and "serve on --host 127.0.0.1" in output


def test_a_pacs_over_dicomweb_is_served_and_a_final_label_goes_back_as_dicom_seg(served, tmp_path: Path) -> None:
    """Orthanc on loopback (with authentication) as the studies: a series pulled and inferred, the
    label saved as final stored back on the PACS as a DICOM SEG over the same series."""
    import io

    import pydicom
    import requests

    from conftest import write_dicom_series
    from test_pacs import DICOMWEB_PLUGIN, ORTHANC, PASSWORD, USER, Orthanc

    if not (Path(ORTHANC).is_file() and DICOMWEB_PLUGIN.is_file()):
        pytest.skip("needs Debian's orthanc and orthanc-dicomweb: make pacs-install")
    _, _, studies, bundles = served
    pacs = Orthanc(tmp_path / "pacs")
    server = None
    try:
        pacs.wait()
        study = pydicom.uid.generate_uid()
        image = nib.load(studies / "case0.nii.gz").get_fdata(dtype=np.float32)
        series = write_dicom_series(tmp_path / "series", image * 1000, spacing=(2.0, 2.0, 2.0), study_uid=study)
        pacs.upload_series(tmp_path / "series")
        env = {"MONAI_LABEL_DICOMWEB_USERNAME": USER, "MONAI_LABEL_DICOMWEB_PASSWORD": PASSWORD,
               "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache")}
        server = Server(f"{pacs.url}/dicom-web", bundles, tmp_path / "server.log", conf={"models": TRAINED_BUNDLE}, env=env)
        server.wait_for_info(START_TIMEOUT)
        label_file = tmp_path / "label.nii.gz"
        label_file.write_bytes(server.call(f"/infer/{TRAINED_BUNDLE}?image={series}&output=image", method="POST", timeout=300))
        label = nib.load(label_file)
        assert label.shape == image.shape
        assert series in json.loads(server.call("/datastore/?output=all"))["objects"]  # pulled into the cache

        saved = np.zeros(image.shape, dtype=np.uint8)
        saved[4:12, 4:12, 2:8], saved[14:20, 4:12, 2:8] = 1, 3
        write_volume(tmp_path / "final.nii.gz", saved, label.affine)
        with open(tmp_path / "final.nii.gz", "rb") as final:
            answer = requests.put(f"{server.url}/datastore/label", params={"image": series, "tag": "final"},
                                  files={"label": ("final.nii.gz", final)}, data={"params": json.dumps({"label_info": [
                                      {"name": "CSF", "idx": 1}, {"name": "white matter", "idx": 3}]})}, timeout=120)
        assert answer.status_code == 200, f"{answer.text[:500]}\n{server.log_tail()}"

        stored = [s for s in pacs.series_of(study) if s["MainDicomTags"].get("Modality") == "SEG"]
        assert len(stored) == 1, server.log_tail()
        seg = pydicom.dcmread(io.BytesIO(pacs.rest(f"/instances/{stored[0]['Instances'][0]}/file")))
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series and seg.StudyInstanceUID == study
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["CSF", "white matter"]
        assert PASSWORD not in server.log.read_text()
    finally:
        if server is not None:
            server.stop()
        pacs.stop()
