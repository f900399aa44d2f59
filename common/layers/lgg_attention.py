"""Local-global Gaussian-weighted self-attention (LGG-SA) of MT-UNet (Wang et al., ICASSP 2022), in 3D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.layers.gaussian_axial_attention import GaussianAxialAttention
from common.layers.window_aggregation import DynamicWindowAggregation
from common.layers.window_attention import WindowAttention


class LocalGlobalGaussianAttention(nn.Module):
    """LGG-SA: local window attention, then global Gaussian-weighted axial attention between windows.

    1. ``local = WindowAttention(x)``;
    2. each window of ``local`` aggregated to one token (:class:`DynamicWindowAggregation`);
    3. Gaussian-weighted axial attention over the grid of window tokens;
    4. trilinear upsampling to ``x``'s grid and a 1x1x1 convolution fusing ``cat(local, global)``.

    Any grid size (windows are padded and cropped).

    Args:
        hidden_size: channels ``C``.
        window_size: window edge in voxels.
        num_heads: heads of both attentions; must divide ``C``.
        initial_shift: starting fall-off of the Gaussian weighting (kept positive).
        dropout_rate: dropout of the window attention, in training only.
    """

    def __init__(
        self,
        hidden_size: int,
        window_size: int,
        num_heads: int = 1,
        initial_shift: float = 0.5,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.local_attention = WindowAttention(hidden_size, window_size, num_heads, dropout_rate)
        self.aggregation = DynamicWindowAggregation(hidden_size, window_size)
        self.global_attention = GaussianAxialAttention(hidden_size, num_heads, initial_shift)
        self.fuse = nn.Conv3d(2 * hidden_size, hidden_size, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, D, H, W)``; returns the same shape."""
        local = self.local_attention(x)
        global_context = self.global_attention(self.aggregation(local))
        upsampled = F.interpolate(global_context, size=x.shape[2:], mode="trilinear", align_corners=False)
        return self.fuse(torch.cat([local, upsampled], dim=1))
