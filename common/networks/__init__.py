"""Networks of the bundles, composed from ``common.layers`` and MONAI blocks."""

from common.networks.ann_net import ANNNet
from common.networks.attention_unet import AttentionUNet
from common.networks.nonlocal_unet import NonLocalUNet
from common.networks.unetr import UNETR

__all__ = ["ANNNet", "AttentionUNet", "NonLocalUNet", "UNETR"]
