"""3D Attention U-Net (Oktay et al., Attention U-Net: Learning Where to Look for the Pancreas, MIDL 2018)."""

from __future__ import annotations

from functools import partial

import torch
from monai.networks.blocks import Convolution, UnetOutBlock
from torch import nn

from common.layers.attention_gate import AttentionGate
from common.networks.stages import res_block, run_stages


class AttentionUNet(nn.Module):
    """U-Net whose every skip is weighted by an additive attention gate before concatenation.

    Encoder: ``len(levels)`` stages of two 3x3x3 convolutions (norm, act), each after the first
    halving the grid with a stride-2 first convolution; widths ``feature_size * 2^i``. Decoder: a
    stride-2 transposed convolution upsamples the coarser map, which also gates the skip
    (:class:`common.layers.AttentionGate`, gating signal resampled trilinearly); the gated skip and
    the upsampled map are concatenated and convolved twice. A 1x1x1 convolution gives the logits.

    Input grids must be divisible by ``2^(num_levels - 1)`` (the ROI; sliding-window inference pads
    smaller volumes).

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels).
        feature_size: width of the first level; doubled at each level.
        num_levels: levels including the bottom (4: three downsamplings).
        norm_name: MONAI norm of the convolution blocks. The gates have none, as in Oktay et al.:
            a norm on the one-channel ``psi`` map would force every gate map to zero mean and unit
            variance before the sigmoid.
        dropout_rate: dropout in the convolution blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 16,
        num_levels: int = 4,
        norm_name: str = "instance",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [feature_size * 2**i for i in range(num_levels)]
        block = partial(res_block, norm_name=norm_name, dropout=dropout_rate)
        self.encoder = nn.ModuleList(
            [block(in_channels, widths[0])] + [block(widths[i - 1], widths[i], stride=2) for i in range(1, num_levels)]
        )
        coarse = list(reversed(widths[1:]))
        fine = list(reversed(widths[:-1]))
        self.upsample = nn.ModuleList(
            Convolution(3, c, f, strides=2, kernel_size=3, is_transposed=True, conv_only=True) for c, f in zip(coarse, fine)
        )
        self.gates = nn.ModuleList(AttentionGate(f, c, inter_channels=max(f // 2, 1), norm=None) for c, f in zip(coarse, fine))
        self.decoder = nn.ModuleList(block(2 * f, f) for f in fine)
        self.out = UnetOutBlock(3, widths[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, D, H, W)``; returns logits ``(B, out_channels, D, H, W)``."""
        skips = run_stages(self.encoder, x)
        x = skips.pop()
        for upsample, gate, decode in zip(self.upsample, self.gates, self.decoder):
            skip = skips.pop()
            x = decode(torch.cat([gate(skip, x), upsample(x)], dim=1))
        return self.out(x)
