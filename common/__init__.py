"""Code shared by the attention-segmentation bundles, in rooms by audience:

- ``common.layers`` and ``common.networks``: the attention blocks and the networks built from them;
- ``common.transforms``: what the bundles' transform chains call beyond MONAI (loading checks,
  intensity, inversion to the input grid, augmentation, post-processing);
- ``common.workflow``: training and evaluation (data sets, checkpoints, losses, handlers, report);
- ``common.cli``: the commands of ``python -m common`` and their I/O (scan, DICOM, DICOMweb,
  overlay, ONNX).

``import common`` imports none of them, nor MONAI or torch: a room is imported when first used, as
a config's ``$common.workflow.data.load_datalist(...)`` uses it. The names configs reference are
listed in :mod:`common.surface`, with where the names of earlier versions went.
"""

from common.surface import lazy_getattr

__getattr__ = lazy_getattr(__name__)
