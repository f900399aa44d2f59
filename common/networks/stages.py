"""Helpers shared by the encoder-decoder networks: the MONAI blocks they are built from, by keyword,
and running a list of stages."""

from __future__ import annotations

import torch
from monai.networks.blocks import ResidualUnit, UnetResBlock
from torch import nn


def res_block(in_channels: int, out_channels: int, *, stride: int = 1, norm_name: str | tuple = "instance",
              dropout: float | None = None) -> UnetResBlock:
    """MONAI's residual block of two 3x3x3 convolutions (``UnetResBlock``); ``stride`` 2 halves the grid.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution.
        norm_name: MONAI norm after each convolution.
        dropout: dropout rate (``None``: none).
    """
    return UnetResBlock(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, kernel_size=3, stride=stride,
                        norm_name=norm_name, dropout=dropout)


def residual_unit(in_channels: int, out_channels: int, *, stride: int = 1, dilation: int = 1,
                  norm_name: str | tuple = "instance") -> ResidualUnit:
    """MONAI's residual unit of two 3x3x3 convolutions, each followed by norm and PReLU (``ResidualUnit``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 halves the grid).
        dilation: dilation of the convolutions.
        norm_name: MONAI norm after each convolution.
    """
    return ResidualUnit(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, strides=stride, norm=norm_name,
                        dilation=dilation)


def run_stages(stages: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Apply ``stages`` in sequence; the output of every stage, finest first (the skips)."""
    outputs = []
    for stage in stages:
        x = stage(x)
        outputs.append(x)
    return outputs
