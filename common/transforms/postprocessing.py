"""Post-processing that MONAI has no transform for: certain background where a brain-extracted scan is
zero, enclosed background relabelled, and label volumes written atomically."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import NibabelWriter
from monai.transforms import MapTransform
from scipy import ndimage

from common.io import write_atomically

logger = logging.getLogger(__name__)


class BackgroundWhereZerod(MapTransform):
    """Certain background (probability 1 for class 0, 0 for the others) wherever the pre-processed
    image is zero in every channel: outside the brain of a brain-extracted scan, whose input
    contract says it is zero there. A window of nothing but zeros, which the training crops never
    show the network, then labels nothing, however wide the scan's empty border. The configs
    enable it where the weights carry an input contract (not for a CT, whose zero is water).

    Args:
        keys: keys of class probabilities ``(C, d, h, w)`` on the pre-processed image's grid.
        image_key: key of the pre-processed image ``(channels, d, h, w)``.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image") -> None:
        super().__init__(keys)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        outside = (torch.as_tensor(d[self.image_key]) == 0).all(dim=0)
        for key in self.key_iterator(d):
            probabilities = d[key].clone()
            where = outside.to(probabilities.device)
            probabilities[:, where] = 0
            probabilities[0, where] = 1
            d[key] = probabilities
        return d


class FillEnclosedBackgroundd(MapTransform):
    """Label with ``value`` the background voxels that the foreground encloses: background not
    reachable from the volume's edge through background (26-connected), as MONAI's
    :class:`~monai.transforms.FillHoles` finds holes, with two boolean volumes as working memory.
    Where labels never hold enclosed background, as in a brain whose mask was hole-filled, a dark
    ventricle predicted as background is CSF. The configs enable it where
    ``enclosed_background_class`` is set.

    Args:
        keys: keys of label maps ``(1, D, H, W)`` (integer classes, 0 background).
        value: the class of enclosed background.
    """

    def __init__(self, keys: KeysCollection, value: int) -> None:
        super().__init__(keys)
        self.value = value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = d[key]
            background = (torch.as_tensor(labels)[0] == 0).cpu().numpy()
            enclosed = np.zeros_like(background)
            ndimage.binary_dilation(enclosed, structure=ndimage.generate_binary_structure(background.ndim, background.ndim),
                                    iterations=-1, mask=background, border_value=1, output=enclosed)
            np.logical_not(enclosed, out=enclosed)
            np.logical_and(enclosed, background, out=enclosed)
            del background
            filled = labels.clone()
            filled[0][torch.from_numpy(enclosed).to(filled.device)] = self.value
            d[key] = filled
        return d


class AtomicNibabelWriter(NibabelWriter):
    """:class:`monai.data.NibabelWriter` that writes to a hidden temporary file, then renames it.

    Use as ``SaveImaged(writer="common.transforms.postprocessing.AtomicNibabelWriter", ...)``.
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        write_atomically(filename, lambda path: super(AtomicNibabelWriter, self).write(path, False, **obj_kwargs))
        if verbose:
            logger.info(f"wrote {filename}")
