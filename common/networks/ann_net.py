"""3D Asymmetric Non-local Network (Zhu et al., Asymmetric Non-local Neural Networks for Semantic
Segmentation, ICCV 2019), with a light decoder."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UnetOutBlock
from torch import nn

from common.layers.pyramid_attention import PYRAMID_SIZES, AsymmetricFusionBlock, AsymmetricPyramidBlock
from common.networks.stages import res_block, residual_unit, run_stages


class ANNNet(nn.Module):
    """Residual encoder with output stride 8, AFNB fusing stages 4 and 5, APNB, and a light decoder.

    Encoder (MONAI residual units): stage 1 at full resolution (``feature_size``), stages 2-4 each
    halve the grid and double the width, stage 5 keeps stage 4's grid with dilation 2 (output stride
    8, as the paper's dilated ResNet). AFNB takes queries from stage 5 and pyramid-sampled keys and
    values from stage 4; APNB refines the fused map. The paper upsamples the class map 8x; at 2 mm,
    8 voxels is wider than the CSF, so here the head is upsampled trilinearly to full resolution,
    concatenated with stage 1 (one skip) and refined by a residual block before the classifier.
    Input grids must be divisible by 8.

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels).
        feature_size: width of stage 1; stages 2-5 have 2x, 4x, 8x, 8x.
        key_channels: query/key width of AFNB and APNB; default ``4 * feature_size``.
        pool_sizes: pyramid pool sizes of the key/value sampler (756 positions in 3D by default).
        norm_name: MONAI norm of every block.
        dropout_rate: dropout after the fusion of AFNB and APNB.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 16,
        key_channels: int | None = None,
        pool_sizes: Sequence[int] = PYRAMID_SIZES,
        norm_name: str = "instance",
        dropout_rate: float = 0.05,
    ) -> None:
        super().__init__()
        f = feature_size
        key_channels = key_channels or 4 * f
        unit = partial(residual_unit, norm_name=norm_name)
        self.stages = nn.ModuleList([
            unit(in_channels, f), unit(f, 2 * f, stride=2), unit(2 * f, 4 * f, stride=2), unit(4 * f, 8 * f, stride=2),
            unit(8 * f, 8 * f, dilation=2),
        ])
        self.fusion = AsymmetricFusionBlock(8 * f, 8 * f, 8 * f, key_channels, 4 * f, pool_sizes, norm_name, dropout_rate)
        self.context = AsymmetricPyramidBlock(8 * f, 8 * f, key_channels, 4 * f, pool_sizes, norm_name, dropout_rate)
        self.reduce = Convolution(3, 8 * f, 2 * f, kernel_size=1, norm=norm_name, act="relu")
        self.decoder = res_block(3 * f, f, norm_name=norm_name)
        self.out = UnetOutBlock(3, f, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, D, H, W)``; returns logits ``(B, out_channels, D, H, W)``."""
        features = run_stages(self.stages, x)
        head = self.context(self.fusion(features[3], features[4]))
        head = F.interpolate(self.reduce(head), size=features[0].shape[2:], mode="trilinear", align_corners=False)
        return self.out(self.decoder(torch.cat([head, features[0]], dim=1)))
