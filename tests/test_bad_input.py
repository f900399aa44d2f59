"""Bad input stops a bundle before any training step, with one line naming the file and the problem.
Each kind of bad training input is run through ``monai.bundle.run`` in this process; the command's
own one-line printing (no traceback) is checked on the cases that run it as a user does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.networks import UNETR
from conftest import TINY_OVERRIDES, error_line_in_process, make_dataset, run_bundle, write_volume

TINY = TINY_OVERRIDES["unetr"]


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def missing_image(root: Path) -> Path:
    (root / "imagesTr" / "case0.nii.gz").unlink()
    return root / "imagesTr" / "case0.nii.gz"


def unreadable_image(root: Path) -> Path:
    path = root / "imagesTr" / "case0.nii.gz"
    path.write_bytes(b"this is not a NIfTI file")
    return path


def truncated_image(root: Path) -> Path:
    path = root / "imagesTr" / "case0.nii.gz"
    path.write_bytes(path.read_bytes()[:400])
    return path


def label_shape_differs(root: Path) -> Path:
    path = root / "labelsTr" / "case0.nii.gz"
    data, affine = _load(path)
    write_volume(path, data[:, :, :-2], affine)
    return path


def label_affine_differs(root: Path) -> Path:
    path = root / "labelsTr" / "case0.nii.gz"
    data, affine = _load(path)
    write_volume(path, data, affine @ np.diag([1.0, 1.0, 1.5, 1.0]))
    return path


def image_is_2d(root: Path) -> Path:
    path = root / "imagesTr" / "case0.nii.gz"
    data, affine = _load(path)
    write_volume(path, data[:, :, 0], affine)
    return path


def image_has_two_channels(root: Path) -> Path:
    path = root / "imagesTr" / "case0.nii.gz"
    data, affine = _load(path)
    write_volume(path, np.stack([data, data], axis=-1), affine)
    return path


def image_has_nan(root: Path) -> Path:
    path = root / "imagesTr" / "case0.nii.gz"
    data, affine = _load(path)
    data = data.astype(np.float32)
    data[3, 4, 5] = np.nan
    write_volume(path, data, affine)
    return path


def image_is_blank(root: Path) -> Path:
    path = root / "imagesTr" / "case0.nii.gz"
    data, affine = _load(path)
    write_volume(path, np.zeros_like(data, dtype=np.float32), affine)
    return path


def label_out_of_range(root: Path) -> Path:
    path = root / "labelsTr" / "case0.nii.gz"
    data, affine = _load(path)
    data = data.copy()
    data[0, 0, 0] = 7
    write_volume(path, data, affine)
    return path


def label_missing_in_datalist(root: Path) -> Path:
    datalist = json.loads((root / "dataset.json").read_text())
    del datalist["training"][0]["label"]
    (root / "dataset.json").write_text(json.dumps(datalist))
    return root / "dataset.json"


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing image": (missing_image, "file not found"),
    "unreadable image": (unreadable_image, "cannot be read as an image"),
    "truncated image": (truncated_image, "cannot be read as an image"),
    "label shape differs": (label_shape_differs, "label shape (36, 36, 34) differs from image shape (36, 36, 36)"),
    "label affine differs": (label_affine_differs, "label affine differs"),
    "2D image": (image_is_2d, "expected a 3D volume, got 2 spatial dimensions"),
    "4D image": (image_has_two_channels, "the network takes 1 channel(s), the image has 2"),
    "NaN intensities": (image_has_nan, "1 NaN or infinite intensities"),
    "blank image": (image_is_blank, "every voxel is 0, a blank image with nothing to segment"),
    "label outside classes": (label_out_of_range, "label values 7 outside 0..3"),
    "label missing": (label_missing_in_datalist, "item 0 of 'training' has no 'label'"),
}


def assert_one_line_error(result, path: Path | str, problem: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"error: {path}: "), result.stderr[-2000:]
    assert problem in lines[-1], lines[-1]
    assert "Traceback" not in result.stderr, "bad input must not print a traceback"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_training_input_stops_before_training(case: str, tmp_path: Path) -> None:
    damage, problem = CASES[case]
    root = make_dataset(tmp_path / "data")
    path = damage(root)
    overrides = {**TINY, "dataset_dir": str(root), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "runs")}
    line = error_line_in_process("unetr", ["train.json"], overrides)
    assert line.startswith(f"error: {path}: ") and problem in line, line
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_the_command_prints_bad_training_input_in_one_line_before_any_step(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "data")
    path = image_has_nan(root)
    overrides = {**TINY, "dataset_dir": str(root), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "runs")}
    result = run_bundle("unetr", ["train.json"], overrides, check=False)
    assert_one_line_error(result, path, "1 NaN or infinite intensities")
    assert "Epoch: 1/" not in result.stdout


def test_no_data_says_how_to_get_it(tmp_path: Path) -> None:
    result = run_bundle("unetr", ["train.json"], {**TINY, "dataset_dir": str(tmp_path / "nothing")}, check=False)
    assert_one_line_error(result, tmp_path / "nothing" / "dataset.json", "run `make data`")


def _inference(tmp_path: Path, checkpoint: Path):
    root = make_dataset(tmp_path / "data")
    overrides = {key: TINY[key] for key in ("roi_size", "feature_size", "hidden_size", "mlp_dim", "num_heads", "num_workers")}
    overrides.update(input_dir=str(root / "imagesTr"), output_dir=str(tmp_path / "out"), ckpt_path=str(checkpoint))
    return run_bundle("unetr", ["inference.json"], overrides, check=False)


def _tiny_weights() -> dict:
    return UNETR(1, 4, 32, feature_size=4, hidden_size=32, mlp_dim=64, num_heads=2).state_dict()


class NotAWeight:
    """Pickled by reference: ``torch.load(weights_only=True)`` must refuse to import it."""


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("truncated", lambda p: (torch.save({"model": _tiny_weights()}, p), p.write_bytes(p.read_bytes()[:1000])),
         "not a loadable weights-only checkpoint"),
        ("pickled code", lambda p: torch.save({"model": _tiny_weights(), "extra": NotAWeight()}, p),
         "not a loadable weights-only checkpoint"),
        ("other network", lambda p: torch.save({"model": {k.replace("vit.", "encoder."): v for k, v in _tiny_weights().items()}}, p),
         "weights do not fit the network: Error(s) in loading state_dict for UNETR: Missing key(s)"),
    ],
)
def test_bad_checkpoint_stops_inference(name: str, content, problem: str, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    content(checkpoint)
    result = _inference(tmp_path, checkpoint)
    assert_one_line_error(result, checkpoint, problem)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def header_claims_a_huge_grid(root: Path) -> Path:
    """A 52-byte .nii.gz whose header claims 1024^3 float32 voxels (4 GiB)."""
    import gzip

    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    path = root / "imagesTr" / "case0.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    return path


def voxels_of_200_mm(root: Path) -> Path:
    """8^3 voxels of 200 mm: resampled to 2 mm that is 800^3 voxels."""
    path = root / "imagesTr" / "case0.nii.gz"
    write_volume(path, np.ones((8, 8, 8), dtype=np.float32), np.diag([200.0, 200.0, 200.0, 1.0]))
    write_volume(root / "labelsTr" / "case0.nii.gz", np.zeros((8, 8, 8), dtype=np.uint8), np.diag([200.0, 200.0, 200.0, 1.0]))
    return path


def _with_sform(path: Path, sform: np.ndarray) -> Path:
    """Rewrite ``path`` with ``sform`` as its only affine (no qform), as a broken header has it."""
    data = np.asarray(nib.load(path).dataobj)
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_sform(sform, code=1)
    header.set_qform(None, code=0)
    nib.save(nib.Nifti1Image(data, None, header), path)
    return path


def zero_voxel_size(root: Path) -> Path:
    return _with_sform(root / "imagesTr" / "case0.nii.gz", np.diag([2.0, 0.0, 2.0, 1.0]))


def nan_affine(root: Path) -> Path:
    return _with_sform(root / "imagesTr" / "case0.nii.gz", np.array([[np.nan, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]))


HEADER_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "huge grid": (header_claims_a_huge_grid, "1,073,741,824 values, more than max_voxels 536,870,912; refused before reading"),
    "200 mm voxels": (voxels_of_200_mm, "makes 800 x 800 x 800 = 512,000,000 values, more than max_resampled_voxels 134,217,728"),
    "zero voxel size": (zero_voxel_size, "every axis needs a positive size"),
    "NaN affine": (nan_affine, "affine holds NaN or infinite values"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_implausible_headers_are_refused_before_allocation(case: str, tmp_path: Path) -> None:
    damage, problem = HEADER_CASES[case]
    root = make_dataset(tmp_path / "data")
    path = damage(root)
    overrides = {**TINY, "dataset_dir": str(root), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "runs")}
    line = error_line_in_process("unetr", ["train.json"], overrides)
    assert line.startswith(f"error: {path}: ") and problem in line, line
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def head_like(path: Path, brain_extracted: bool) -> Path:
    """A 100 x 120 x 100 volume of 2 mm (9.6 L): a whole head is non-zero almost everywhere (scalp,
    skull, neck, background noise); brain-extracted, it is zero outside a 1.2 L ellipsoid."""
    rng = np.random.RandomState(0)
    volume = rng.uniform(5, 100, size=(100, 120, 100)).astype(np.float32)
    if brain_extracted:
        x, y, z = np.ogrid[:100, :120, :100]
        inside = ((x - 50) / 34) ** 2 + ((y - 60) / 40) ** 2 + ((z - 50) / 26) ** 2 <= 1  # 4/3 pi 68 x 80 x 52 mm: 1.18 L
        volume[~inside] = 0
    return write_volume(path, volume, np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.mark.slow
def test_the_brain_contract_refuses_a_whole_head_and_takes_a_brain_extracted_scan(tmp_path: Path) -> None:
    weights = tmp_path / "model.pt"
    torch.save({"model": _tiny_weights()}, weights)
    head = head_like(tmp_path / "scans" / "head.nii.gz", brain_extracted=False)
    overrides = {key: TINY[key] for key in ("roi_size", "feature_size", "hidden_size", "mlp_dim", "num_heads", "num_workers")}
    refused = run_bundle("unetr", ["inference.json"], {**overrides, "input_dir": str(head.parent), "output_dir": str(tmp_path / "out"),
                                                         "ckpt_path": str(weights)}, check=False)
    assert_one_line_error(refused, head, "mL of non-zero voxels, more than 2,500 mL; the weights expect a brain-extracted T1")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    brain = head_like(tmp_path / "brain" / "brain.nii.gz", brain_extracted=True)
    run_bundle("unetr", ["inference.json"], {**overrides, "input_dir": str(brain.parent), "output_dir": str(tmp_path / "out"), "ckpt_path": str(weights)})
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["brain_seg.nii.gz"]
