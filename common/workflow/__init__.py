"""Training and evaluation with MONAI's Ignite workflows: data sets and splits, checkpoints, losses,
handlers and the evaluation report."""

from common.surface import lazy_getattr

__getattr__ = lazy_getattr(__name__)
