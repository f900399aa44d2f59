"""The evaluation report: MONAI's per-image Dice and HD95 in mm, by class name, in ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import MeanDice, from_engine
from monai.metrics import compute_dice

from common.workflow.report import SegmentationReport

NAMES = ["background", "liver", "tumour"]


def one_hot(label: torch.Tensor, spacing: float) -> MetaTensor:
    """``(D, H, W)`` class indices to one-hot ``(3, D, H, W)`` with ``spacing`` mm voxels."""
    affine = torch.diag(torch.tensor([spacing, spacing, spacing, 1.0]))
    return MetaTensor(torch.nn.functional.one_hot(label.long(), 3).permute(3, 0, 1, 2).float(), affine=affine)


def cases() -> list[dict]:
    """Two images: the second at 2 mm with the tumour shifted by 3 voxels."""
    label = torch.zeros(16, 16, 16)
    label[2:14, 2:14, 2:14], label[5:9, 5:9, 5:9] = 1, 2
    shifted = label.clone()
    shifted[5:9, 5:9, 5:9] = 1
    shifted[8:12, 5:9, 5:9] = 2
    return [
        {"image": "a.nii.gz", "pred": one_hot(label, 1.0), "label": one_hot(label, 1.0)},
        {"image": "b.nii.gz", "pred": one_hot(shifted, 2.0), "label": one_hot(label, 2.0)},
    ]


def evaluate(tmp_path: Path, with_dice: bool = True) -> dict:
    engine = Engine(lambda engine, batch: [batch])
    if with_dice:
        MeanDice(include_background=False, output_transform=from_engine(["pred", "label"])).attach(engine, "val_mean_dice")
    SegmentationReport(tmp_path, NAMES).attach(engine)
    engine.run(cases())
    return json.loads((tmp_path / "metrics.json").read_text())


def test_dice_comes_from_monai_and_hd95_is_in_mm(tmp_path: Path) -> None:
    report = evaluate(tmp_path)
    first, second = cases()
    expected = compute_dice(second["pred"][None], second["label"][None], include_background=False)[0]
    assert report["images"][0]["dice"] == {"liver": 1.0, "tumour": 1.0}
    assert report["images"][1]["dice"] == pytest.approx(dict(zip(NAMES[1:], expected.tolist())), abs=1e-4)
    assert report["images"][0]["hd95_mm"] == {"liver": 0.0, "tumour": 0.0}
    assert report["images"][1]["hd95_mm"]["tumour"] == pytest.approx(2.0 * 3)  # 3 voxels of 2 mm
    assert report["dice"]["tumour"] == pytest.approx((1.0 + expected[1].item()) / 2, abs=1e-4)
    assert report["num_images"] == 2


def test_an_evaluator_without_per_image_dice_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no per-image Dice 'val_mean_dice'"):
        evaluate(tmp_path, with_dice=False)
    assert not (tmp_path / "metrics.json").exists()
