"""Inference whose memory follows the network's grid, not the input's: each lean step against the
plain MONAI formulation it replaces."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, AsDiscreted, Compose, FillHoles, Invertd

from common.errors import InputError
from common.transforms.inversion import LabelOnInputGridd, channel_argmax
from common.cli.onnx_network import FasterBackend
from common.transforms.loading import LoadVolumed
from common.transforms.postprocessing import BackgroundWhereZerod, FillEnclosedBackgroundd
from conftest import parsed_chain

MRI = {"mode": "percentile", "lower": 0.5, "upper": 99.5}


def rotated(shape_spacing: tuple[float, float, float], angle: float) -> np.ndarray:
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(shape_spacing)
    affine[:3, 3] = [10, -5, 3]
    return affine


GRIDS = {  # name: (shape, affine, network spacing)
    "oblique, anisotropic": ((30, 25, 10), rotated((0.8, 0.9, 2.5), 0.3), [1.5, 1.5, 1.5]),
    "flipped": ((20, 22, 18), np.array([[-1.0, 0, 0, 5], [0, 1.0, 0, 5], [0, 0, -1.2, 5], [0, 0, 0, 1]]), [2.0, 2.0, 2.0]),
    "axes permuted": ((15, 17, 21), np.array([[0, 0, 1.1, 0], [-0.7, 0, 0, 0], [0, 1.3, 0, 0], [0, 0, 0, 1.0]]), [1.0, 1.0, 1.0]),
}


def preprocessed(tmp_path: Path, shape: tuple[int, ...], affine: np.ndarray, spacing: list[float]) -> tuple[Compose, dict]:
    """An image through the bundles' pre-processing, and random smooth logits on the network's grid."""
    rng = np.random.RandomState(0)
    volume = np.zeros(shape, np.float32)
    volume[2:-2, 2:-2, 2:-2] = rng.rand(*[n - 4 for n in shape]) + 1
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    preprocessing = Compose(parsed_chain("load_transforms", "inference.json", spacing=spacing, normalization=MRI, input_contract=None))
    image = preprocessing({"image": path})["image"]
    coarse = torch.randn(1, 4, *[max(2, n // 4) for n in image.shape[1:]], generator=torch.Generator().manual_seed(1))
    logits = 3 * torch.nn.functional.interpolate(coarse, size=image.shape[1:], mode="trilinear")[0]
    return preprocessing, {"image": image, "pred": MetaTensor(logits, affine=image.affine, meta=dict(image.meta))}


@pytest.mark.parametrize("grid", GRIDS)
def test_labels_on_the_input_grid_are_those_of_invertd(grid: str, tmp_path: Path) -> None:
    """Slab by slab, as MONAI's inversion of the whole pre-processing gives them."""
    shape, affine, spacing = GRIDS[grid]
    preprocessing, data = preprocessed(tmp_path, shape, affine, spacing)
    reference = Compose([
        Activationsd("pred", softmax=True),
        Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted("pred", argmax=True),
    ])({"image": data["image"], "pred": data["pred"].clone()})["pred"]
    for slab_voxels in (1, 700, 10**9):  # one plane at a time, a few planes, all at once
        lean = Compose([Activationsd("pred", softmax=True), LabelOnInputGridd("pred", slab_voxels=slab_voxels)])(
            {"image": data["image"], "pred": data["pred"].clone()})["pred"]
        assert lean.dtype == torch.uint8 and tuple(lean.shape) == (1, *shape)
        assert torch.equal(lean.long(), reference.long()), slab_voxels
        assert np.allclose(lean.affine.numpy(), affine) and np.allclose(reference.affine.numpy(), affine)



@pytest.mark.parametrize("classes", [1, 2, 4, 300])
def test_channel_argmax_is_torchs_argmax_ties_included(classes: int) -> None:
    generator = torch.Generator().manual_seed(classes)
    probabilities = torch.randint(0, 3, (classes, 9, 8, 7), generator=generator).float()  # many ties
    label = channel_argmax(probabilities)
    assert label.dtype == (torch.uint8 if classes <= 256 else torch.int32)
    assert torch.equal(label.long(), probabilities.argmax(dim=0))

def test_enclosed_background_is_what_fill_holes_finds() -> None:
    """Against MONAI's ``FillHoles`` on the foreground mask: closed cavities are relabelled, a
    cavity open to the volume's edge is not, foreground is untouched."""
    rng = np.random.RandomState(3)
    labels = torch.as_tensor(rng.choice([0, 2, 3], size=(1, 24, 26, 22), p=[0.35, 0.35, 0.3]), dtype=torch.uint8)
    labels[0, 5:15, 5:15, 5:15] = 3
    labels[0, 8:12, 8:12, 8:12] = 0  # a closed cavity
    labels[0, 0:4, 10:14, 10:14] = 0  # open to the edge
    foreground = (labels > 0).to(torch.uint8)
    enclosed = torch.as_tensor(FillHoles()(foreground)).bool() & (labels == 0)
    expected = torch.where(enclosed, torch.tensor(1, dtype=torch.uint8), labels)
    filled = FillEnclosedBackgroundd("pred", 1)({"pred": labels.clone()})["pred"]
    assert torch.equal(filled, expected) and bool(enclosed[0, 8:12, 8:12, 8:12].all()) and not bool(enclosed[0, 0:2].any())
    assert torch.equal(labels[0, 8:12, 8:12, 8:12], torch.zeros(4, 4, 4, dtype=torch.uint8))  # the input is not changed


def test_where_a_brain_extracted_image_is_zero_the_label_is_background() -> None:
    """Every channel zero: background for certain, the probabilities there one-hot; a voxel zero in
    one channel only, and every other voxel, keeps its probabilities. The configs run it where the
    weights carry an input contract (brain-extracted scans), and not for CT (no contract)."""
    image = torch.rand(2, 12, 10, 8) + 0.1
    image[:, :3] = 0  # outside the brain
    image[0, 6, 5, 4] = 0  # one channel only
    probabilities = torch.softmax(torch.randn(4, 12, 10, 8), dim=0)
    masked = BackgroundWhereZerod("pred")({"image": image, "pred": probabilities})["pred"]
    assert torch.equal(masked[:, :3], torch.eye(4)[0].view(4, 1, 1, 1).expand(4, 3, 10, 8))
    assert torch.equal(masked[:, 3:], probabilities[:, 3:]) and not torch.equal(probabilities[:, :3], masked[:, :3])
    for config, key in (("train.json", "validate#postprocessing"), ("inference.json", "postprocessing")):
        assert BackgroundWhereZerod in [type(t) for t in parsed_chain(key, config)]
        assert BackgroundWhereZerod not in [type(t) for t in parsed_chain(key, config, input_contract=None)]


@pytest.mark.parametrize("case", ["float32", "scaled int16, 4D", "big-endian", "uncompressed"])
def test_streamed_nifti_reads_what_nibabel_reads(case: str, tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    array = (rng.rand(20, 21, 22) * 1000).astype(np.float32)
    suffix = ".nii" if case == "uncompressed" else ".nii.gz"
    if case == "scaled int16, 4D":
        array = (rng.rand(12, 13, 14, 3) * 1000).astype(np.int16)
    if case == "big-endian":
        array = array.astype(">f4")
    image = nib.Nifti1Image(array, np.diag([1.2, 0.9, 2.0, 1.0]))
    if case == "scaled int16, 4D":
        image.header.set_slope_inter(0.5, -3.0)
    path = tmp_path / f"image{suffix}"
    nib.save(image, path)
    loaded = LoadVolumed("image", image_only=True)({"image": path})["image"]
    assert np.allclose(loaded.numpy(), np.asanyarray(nib.load(path).dataobj)) and loaded.numpy().flags["C_CONTIGUOUS"]
    assert np.allclose(loaded.affine.numpy(), nib.load(path).affine)


def test_a_truncated_nifti_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((30, 30, 30), np.float32), np.eye(4)), path)
    whole = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(whole[: len(whole) // 2]))
    with pytest.raises(InputError, match=rf"{path}: cannot be read as an image"):
        LoadVolumed("image", image_only=True)({"image": path})


class DelayedDouble(torch.nn.Module):
    """Doubles its input after ``delay_s`` per window; counts the windows it ran and keeps what it loaded."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s, self.windows, self.loaded = delay_s, 0, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += len(x)
        time.sleep(self.delay_s * len(x))
        return x * 2

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> None:
        self.loaded = (dict(state_dict), strict)


@pytest.mark.parametrize("onnx_faster", [True, False])
def test_the_faster_backend_runs_the_windows_after_the_race(onnx_faster: bool) -> None:
    """Windows 1-4 alternate eager / ONNX Runtime (warm-up, then timed), each window computed once;
    the faster runs the other twelve; the weights reach both, strictly."""
    fast, slow = DelayedDouble(0.001), DelayedDouble(0.03)
    eager, exported = (slow, fast) if onnx_faster else (fast, slow)
    race = FasterBackend(eager, exported)
    race.load_state_dict({"weight": torch.ones(1)})
    assert eager.loaded[1] is True and exported.loaded[0].keys() == {"weight"}
    for _ in range(4):
        batch = torch.rand(4, 1, 8, 8, 8)
        assert torch.equal(race(batch), batch * 2)
    assert race.winner is fast and set(race.window_ms) == {"pytorch", "onnxruntime"}
    assert (eager.windows, exported.windows) == ((2, 14) if onnx_faster else (14, 2))


def test_fewer_windows_than_the_race_are_computed_once_and_undecided() -> None:
    race = FasterBackend(DelayedDouble(0.0), DelayedDouble(0.0))
    batch = torch.rand(3, 1, 4, 4, 4)
    assert torch.equal(race(batch), batch * 2)
    assert race.winner is None and (race.eager.windows, race.exported.windows) == (2, 1)
