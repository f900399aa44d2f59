"""Evaluation report: MONAI's per-image Dice and our HD95 in mm, per named class, in ``metrics.json``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.metrics import compute_hausdorff_distance

from common.io import write_json
from common.transforms.loading import source_name

logger = logging.getLogger(__name__)


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


class SegmentationReport:
    """Ignite handler for an evaluator whose output items hold one-hot ``pred`` and ``label``
    ``(C, D, H, W)`` (background first) and whose MONAI ``MeanDice`` metric keeps its per-image
    details (``engine.state.metric_details``, MONAI's default). It adds what MONAI's handlers lack:
    the 95th-percentile Hausdorff distance in mm (from the prediction's voxel spacing; MONAI's
    ``HausdorffDistance`` handler measures voxels) and one report by class name. On completion it
    writes ``output_dir/metrics.json`` (``dice`` and ``hd95`` per class, ``mean_dice`` over the
    foreground classes, per-image rows) atomically and logs a table.

    Args:
        output_dir: folder of the report.
        class_names: names of all classes, background first.
        dice_metric: name of the evaluator's ``MeanDice`` metric (foreground classes).
        filename: report file name.
        image_key: output key of the image, whose file names the rows.
        pred_key: output key of the one-hot prediction.
        label_key: output key of the one-hot reference.
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str],
        dice_metric: str = "val_mean_dice",
        filename: str = "metrics.json",
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        self.path = Path(output_dir) / filename
        self.foreground = list(class_names)[1:]
        self.dice_metric = dice_metric
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def update(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred, label = item[self.pred_key][None], item[self.label_key][None]
            spacing = pred.pixdim.tolist() if isinstance(pred, MetaTensor) else None
            hd95 = compute_hausdorff_distance(pred, label, include_background=False, percentile=95, spacing=spacing)[0]
            self.rows.append({"image": source_name(item.get(self.image_key)), "hd95": hd95.tolist()})

    def add_dice(self, engine: Engine) -> None:
        """Each row's Dice from the ``MeanDice`` details, in the order the images were measured."""
        details = getattr(engine.state, "metric_details", {}).get(self.dice_metric)
        if details is None or len(details) != len(self.rows):
            raise RuntimeError(f"SegmentationReport: the evaluator has no per-image Dice {self.dice_metric!r} "
                               "(a MeanDice key metric with save_details, as validate#key_metric in train.json)")
        for row, dice in zip(self.rows, details):
            row["dice"] = dice.tolist()

    def summary(self) -> dict:
        """Per-class means over images (NaN where a class is absent is skipped) and per-image rows."""
        dice = np.nanmean(np.array([r["dice"] for r in self.rows], dtype=float), axis=0)
        hd95 = np.array([r["hd95"] for r in self.rows], dtype=float)
        hd95 = np.nanmean(np.where(np.isfinite(hd95), hd95, np.nan), axis=0)
        return {
            "mean_dice": _finite_or_none(np.nanmean(dice)),
            "dice": {name: _finite_or_none(v) for name, v in zip(self.foreground, dice)},
            "hd95_mm": {name: _finite_or_none(v) for name, v in zip(self.foreground, hd95)},
            "num_images": len(self.rows),
            "images": [
                {
                    "image": r["image"],
                    "dice": {n: _finite_or_none(v) for n, v in zip(self.foreground, r["dice"])},
                    "hd95_mm": {n: _finite_or_none(v) for n, v in zip(self.foreground, r["hd95"])},
                }
                for r in self.rows
            ],
        }

    def write(self, engine: Engine) -> None:
        self.add_dice(engine)
        summary = self.summary()
        write_json(self.path, summary)
        width = max(len(n) for n in [*self.foreground, "mean (foreground)"])
        lines = [f"{'class':<{width}}  {'Dice':>6}  {'HD95 mm':>8}"]
        for name in self.foreground:
            dice, hd = summary["dice"][name], summary["hd95_mm"][name]
            lines.append(f"{name:<{width}}  {_fmt(dice, 6, 4)}  {_fmt(hd, 8, 2)}")
        lines.append(f"{'mean (foreground)':<{width}}  {_fmt(summary['mean_dice'], 6, 4)}")
        logger.info("evaluation on %d image(s), written to %s\n%s", len(self.rows), self.path, "\n".join(lines))


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"
