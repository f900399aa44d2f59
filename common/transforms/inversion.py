"""The network's class probabilities back on the input's own grid, as a label volume, in slabs: memory
bounded by the network's grid and one slab, not by ``num_classes x`` the input grid."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SpatialResample

# How the configs' load_transforms resample an image to the network's spacing; the inverse resamples the same way.
RESAMPLE_MODE = "bilinear"
RESAMPLE_PADDING = "border"
RESAMPLE_DTYPE = torch.float32  # MONAI's default, float64, doubles the input's memory while it is resampled
DEFAULT_SLAB_VOXELS = 2**21  # ~8 MB of float32 per class and slab


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type that holds every class index."""
    return torch.uint8 if num_classes <= 256 else torch.int32


def channel_argmax(probabilities: torch.Tensor) -> torch.Tensor:
    """``probabilities.argmax(dim=0)`` of ``(C, D, H, W)`` as ``label_dtype(C)``, the first class
    on ties, by one element-wise pass per class: on the CPU about four times faster than ``argmax``
    over the leading dimension, whose reduction strides across channels."""
    best = probabilities[0].clone()
    label = torch.zeros(probabilities.shape[1:], dtype=label_dtype(probabilities.shape[0]), device=probabilities.device)
    for index in range(1, probabilities.shape[0]):
        higher = probabilities[index] > best
        label.masked_fill_(higher, index)
        torch.where(higher, probabilities[index], best, out=best)
    return label


class LabelOnInputGridd(MapTransform):
    """Class probabilities ``(C, d, h, w)`` on the network's grid (the pre-processed ``image``'s
    grid) to the arg-max label ``(1, D, H, W)`` on the grid the image was read with (its
    ``original_affine`` and ``spatial_shape``), with that affine and the image's metadata.

    The same sampling as :class:`monai.transforms.Invertd` of the pre-processing (reorientation and
    bilinear resampling, border padding), done directly to the input grid, slab by slab along its
    last axis: only one slab's probabilities (``C x slab_voxels``) are held at the input's
    resolution, and the label is uint8 (int32 above 256 classes).

    Args:
        keys: keys of the probabilities to turn into labels.
        image_key: key of the pre-processed image whose metadata hold both grids.
        slab_voxels: input-grid voxels resampled at once (at least one plane).
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", slab_voxels: int = DEFAULT_SLAB_VOXELS) -> None:
        super().__init__(keys)
        self.image_key = image_key
        self.slab_voxels = slab_voxels
        self.resample = SpatialResample(mode=RESAMPLE_MODE, padding_mode=RESAMPLE_PADDING, align_corners=False, dtype=RESAMPLE_DTYPE)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        target_affine = torch.as_tensor(image.meta["original_affine"], dtype=torch.float64)
        shape = [int(s) for s in image.meta["spatial_shape"]][:3]
        plane = shape[0] * shape[1]
        depth = max(1, self.slab_voxels // plane)
        for key in self.key_iterator(d):
            probabilities = MetaTensor(torch.as_tensor(d[key]), affine=image.affine)
            label = torch.empty((1, *shape), dtype=label_dtype(probabilities.shape[0]))
            for start in range(0, shape[2], depth):
                stop = min(start + depth, shape[2])
                offset = torch.eye(4, dtype=torch.float64)
                offset[2, 3] = start
                slab = self.resample(probabilities, dst_affine=target_affine @ offset, spatial_size=(shape[0], shape[1], stop - start))
                label[0, :, :, start:stop] = channel_argmax(slab.as_tensor() if isinstance(slab, MetaTensor) else slab).cpu()
            meta = {k: v for k, v in image.meta.items() if k != "affine"}
            d[key] = MetaTensor(label, affine=target_affine, meta={**meta, "spatial_shape": shape})
        return d
