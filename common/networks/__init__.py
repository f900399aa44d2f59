"""Networks of the bundles, composed from ``common.layers`` and MONAI blocks."""

from common.networks.ann_net import ANNNet
from common.networks.attention_unet import AttentionUNet
from common.networks.msga_net import MSGANet
from common.networks.mt_unet import MixedTransformerModule, MTUNet
from common.networks.nonlocal_unet import NonLocalUNet
from common.networks.unetr import UNETR

__all__ = ["ANNNet", "AttentionUNet", "MSGANet", "MTUNet", "MixedTransformerModule", "NonLocalUNet", "UNETR"]
