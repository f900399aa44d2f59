"""The embedded MNI152 demo data set: labelling rule, hemisphere split, atomic and idempotent writing."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.cli.prepare_data import build_mni152_dataset, tissue_labels


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mni152_dataset(tmp_path_factory.mktemp("demo") / "mni152")


def test_tissue_labels_rule() -> None:
    gm = np.zeros((9, 9, 9), dtype=np.float32)
    wm = np.zeros_like(gm)
    gm[2:7, 2:7, 2:7] = 0.8
    wm[3:6, 3:6, 3:6] = 0.9
    gm[4, 4, 4], wm[4, 4, 4] = 0.1, 0.15  # inside the brain, neither tissue above 0.5: CSF
    labels = tissue_labels(gm, wm)
    assert labels[0, 0, 0] == 0 and labels[2, 2, 2] == 2 and labels[3, 3, 3] == 3 and labels[4, 4, 4] == 1


def test_layout_and_hemisphere_split(demo: Path) -> None:
    datalist = json.loads((demo / "dataset.json").read_text())
    assert datalist["labels"] == {"0": "background", "1": "CSF", "2": "grey matter", "3": "white matter"}
    train, val = datalist["training"][0], datalist["validation"][0]
    left, right = nib.load(demo / train["image"]), nib.load(demo / val["image"])
    # the training hemisphere lies entirely at x < 0 mm, the validation one at x >= 0 mm
    x_last_left = (left.affine @ [left.shape[0] - 1, 0, 0, 1])[0]
    assert x_last_left < 0 <= right.affine[0, 3]
    assert left.header.get_zooms() == (2.0, 2.0, 2.0)
    for item in (train, val):
        label = nib.load(demo / item["label"])
        assert label.shape == nib.load(demo / item["image"]).shape
        np.testing.assert_allclose(label.affine, nib.load(demo / item["image"]).affine)
    counts = sum(np.bincount(np.asarray(nib.load(demo / i["label"]).dataobj).ravel(), minlength=4) for i in (train, val))
    # the shared notes' rule at 2 mm gives about 23k CSF, 135k GM and 79k WM voxels
    assert 18_000 < counts[1] < 28_000 and 125_000 < counts[2] < 145_000 and 70_000 < counts[3] < 88_000


def test_rerun_is_a_noop(demo: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*")}
    build_mni152_dataset(demo)
    assert before == {p: p.stat().st_mtime_ns for p in demo.rglob("*")}


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        build_mni152_dataset(tmp_path / "mni152")
    assert list(tmp_path.iterdir()) == []
