"""Position (PAM) and channel (CAM) attention of DANet (Fu et al., CVPR 2019), in 3D, as used by the
multi-scale self-guided attention network (Sinha & Dolz, IEEE JBHI 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.layers.tokens import from_tokens, fused_attention, to_tokens


class PositionAttention(nn.Module):
    """3D position attention: ``gamma * sum_i softmax_i(q_j . k_i) v_i + x``, ``gamma`` learned from 0.

    Every position attends over all positions through ``scaled_dot_product_attention`` (unscaled
    logits, as in DANet). With ``downsample = r > 1`` the attention runs on an ``r``-times average
    pooled grid and its output is resampled (trilinear) to the input grid: over a 96^3 ROI, full
    resolution would mean 884,736 tokens.

    Args:
        in_channels: channels ``C`` of the input.
        key_channels: channels of queries and keys; default ``max(C // 8, 1)`` as in DANet (keys
            narrower than 16 are zero-padded for the fused kernel, see ``fused_attention``).
        downsample: pooling factor of the grid the attention runs on.
    """

    def __init__(self, in_channels: int, key_channels: int | None = None, downsample: int = 1) -> None:
        super().__init__()
        key_channels = key_channels or max(in_channels // 8, 1)
        self.query = nn.Conv3d(in_channels, key_channels, 1)
        self.key = nn.Conv3d(in_channels, key_channels, 1)
        self.value = nn.Conv3d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.downsample = downsample

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention output before the residual, ``(B, C, D, H, W)``."""
        pooled = F.avg_pool3d(x, self.downsample, ceil_mode=True) if self.downsample > 1 else x
        attended = fused_attention(
            to_tokens(self.query(pooled)), to_tokens(self.key(pooled)), to_tokens(self.value(pooled)), scale=1.0
        )
        out = from_tokens(attended, pooled.shape[2:])
        if self.downsample > 1:
            out = F.interpolate(out, size=x.shape[2:], mode="trilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, D, H, W)``; returns the same shape."""
        return self.gamma * self.attend(x) + x


class ChannelAttention(nn.Module):
    """3D channel attention: ``gamma * softmax(-X X^T) X + x`` over the flattened grid, ``gamma``
    learned from 0. DANet writes the logits as ``max(E) - E``; softmax is shift-invariant, so that is
    ``softmax(-E)``. The matrix is ``C x C``, small whatever the grid."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention output before the residual, ``(B, C, D, H, W)``."""
        features = x.flatten(2)
        weights = torch.softmax(-(features @ features.transpose(1, 2)), dim=-1)
        return (weights @ features).view_as(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, D, H, W)``; returns the same shape."""
        return self.gamma * self.attend(x) + x
