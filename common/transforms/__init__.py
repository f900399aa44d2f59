"""What the bundles' transform chains call beyond MONAI: loading checks, intensity normalisation,
inversion to the input grid, the augmentation policy and post-processing; one job a module."""

from common.surface import lazy_getattr

__getattr__ = lazy_getattr(__name__)
