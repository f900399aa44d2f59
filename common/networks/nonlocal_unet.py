"""3D Non-local U-Net (Wang et al., Non-local U-Nets for Biomedical Image Segmentation, AAAI 2020)."""

from __future__ import annotations

from functools import partial

import torch
from monai.networks.blocks import Convolution, UnetOutBlock
from torch import nn

from common.layers.global_aggregation import GlobalAggregationBlock
from common.networks.stages import res_block


class GlobalUpBlock(nn.Module):
    """Up-sampling block: ``deconv(x) + GAB_up(x)`` (the transposed convolution is the residual
    path of a global aggregation block whose queries come from a stride-2 transposed convolution).

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of the output, on twice ``x``'s grid.
        num_heads: attention heads of the block.
        dropout_rate: dropout on the attention weights.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int, dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.residual = Convolution(3, in_channels, out_channels, strides=2, kernel_size=3, is_transposed=True, conv_only=True)
        self.attention = GlobalAggregationBlock(in_channels, out_channels, key_channels=out_channels, value_channels=out_channels,
                                                num_heads=num_heads, query_transform="up", dropout_rate=dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, D, H, W)``; returns ``(B, C_out, 2D, 2H, 2W)``."""
        return self.residual(x) + self.attention(x)


class NonLocalUNet(nn.Module):
    """U-Net with global aggregation at the bottom and in the up path; skips are summed.

    Input block: a 3x3x3 convolution and a residual block at full resolution. Down path: residual
    blocks with a stride-2 first convolution, widths ``feature_size * 2^i``. Bottom:
    ``x + GAB_same(x)``. Up path: the ``global_up_levels`` coarsest up-samplings are
    :class:`GlobalUpBlock` (attention over all positions of the coarser map), the finer ones plain
    transposed convolutions (attention from a full-resolution grid would dominate the cost); after
    each, the skip is added and a residual block refines the sum. Output: a 1x1x1 convolution.
    Input grids must be divisible by ``2^num_downsamplings``.

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels).
        feature_size: width of the input block; doubled at each downsampling.
        num_downsamplings: down (and up) levels.
        num_heads: attention heads of every global aggregation block.
        global_up_levels: how many of the coarsest up-samplings use global aggregation.
        norm_name: MONAI norm of the residual blocks.
        dropout_rate: dropout on the attention weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 16,
        num_downsamplings: int = 3,
        num_heads: int = 2,
        global_up_levels: int = 2,
        norm_name: str = "instance",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [feature_size * 2**i for i in range(num_downsamplings + 1)]
        res = partial(res_block, norm_name=norm_name)
        self.input_block = nn.Sequential(
            Convolution(3, in_channels, widths[0], kernel_size=3, conv_only=True), res(widths[0], widths[0])
        )
        self.down = nn.ModuleList(res(widths[i], widths[i + 1], stride=2) for i in range(num_downsamplings))
        bottom = widths[-1]
        self.bottom = GlobalAggregationBlock(bottom, bottom, key_channels=bottom, value_channels=bottom, num_heads=num_heads,
                                             query_transform="same", dropout_rate=dropout_rate)
        self.up = nn.ModuleList()
        self.refine = nn.ModuleList()
        for level, (coarse, fine) in enumerate(zip(reversed(widths[1:]), reversed(widths[:-1]))):
            if level < global_up_levels:
                self.up.append(GlobalUpBlock(coarse, fine, num_heads, dropout_rate))
            else:
                self.up.append(Convolution(3, coarse, fine, strides=2, kernel_size=3, is_transposed=True, conv_only=True))
            self.refine.append(res(fine, fine))
        self.out = UnetOutBlock(3, widths[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, D, H, W)``; returns logits ``(B, out_channels, D, H, W)``."""
        x = self.input_block(x)
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = x + self.bottom(skips.pop())
        for up, refine in zip(self.up, self.refine):
            x = refine(up(x) + skips.pop())
        return self.out(x)
