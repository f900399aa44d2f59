"""Overlay picture of a segmentation: three orthogonal slices through the structure's centre."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation

from common.io import write_atomically


PERCENTILE_SAMPLE = 2**20  # voxels the grey-level window is estimated from, at most


def structure_centre(label: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the centroid of the foreground of ``label`` ``(D, H, W)`` (the grid's centre
    when there is none), from the foreground's projection on each axis (no list of voxels)."""
    foreground = label > 0
    total = int(foreground.sum())
    if total == 0:
        return tuple(s // 2 for s in label.shape)
    centre = []
    for axis in range(foreground.ndim):
        profile = foreground.sum(axis=tuple(a for a in range(foreground.ndim) if a != axis), dtype=np.int64)
        centre.append(int(round(float(np.dot(np.arange(len(profile)), profile)) / total)))
    return tuple(centre)


def grey_window(volume: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles of ``volume``, from an evenly strided sample of at most
    :data:`PERCENTILE_SAMPLE` voxels."""
    step = max(1, int(np.ceil((volume.size / PERCENTILE_SAMPLE) ** (1 / volume.ndim))))
    low, high = np.percentile(volume[(slice(None, None, step),) * volume.ndim], [0.5, 99.5])
    return float(low), float(high)


def save_overlay(image: MetaTensor, label: MetaTensor, class_names: Sequence[str], path: str | Path, title: str = "") -> None:
    """Write a PNG of sagittal, coronal and axial slices of ``image`` with ``label`` coloured over it.

    Both are ``(1, D, H, W)`` on the same grid; they are shown in RAS orientation with their voxel
    spacing as aspect ratio, through the centroid of the labelled voxels, with a legend of the
    foreground ``class_names`` (background first in the list). Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    to_ras = Orientation(axcodes="RAS", labels=None)
    image, label = to_ras(image), to_ras(label)
    spacing = [float(s) for s in image.pixdim[:3]]
    volume = torch.as_tensor(image)[0].numpy()
    classes = torch.as_tensor(label)[0].numpy()
    low, high = grey_window(volume)
    colours = plt.get_cmap("tab10").colors
    palette = ListedColormap([(0, 0, 0, 0)] + [(*colours[i % 10], 0.45) for i in range(len(class_names) - 1)])
    x, y, z = structure_centre(classes)
    views = [  # (title, image slice, label slice, (horizontal spacing, vertical spacing))
        (f"sagittal x={x}", volume[x, :, :], classes[x, :, :], (spacing[1], spacing[2])),
        (f"coronal y={y}", volume[:, y, :], classes[:, y, :], (spacing[0], spacing[2])),
        (f"axial z={z}", volume[:, :, z], classes[:, :, z], (spacing[0], spacing[1])),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(13, 5), layout="constrained")
    for axis, (name, plane, labels, (dx, dy)) in zip(axes, views):
        axis.imshow(plane.T, cmap="gray", origin="lower", vmin=low, vmax=high, aspect=dy / dx, interpolation="nearest")
        axis.imshow(labels.T, cmap=palette, origin="lower", vmin=0, vmax=len(class_names) - 1, aspect=dy / dx,
                    interpolation="nearest")
        axis.set_title(name)
        axis.axis("off")
    legend = [Patch(color=palette(i), label=n) for i, n in enumerate(class_names) if i > 0]
    figure.legend(handles=legend, loc="outside lower center", ncol=len(legend), frameon=False)
    if title:
        figure.suptitle(title)
    write_atomically(path, lambda staging: figure.savefig(staging, dpi=90, format="png"))
    plt.close(figure)
