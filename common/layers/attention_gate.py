"""Additive attention gate on a skip connection (Oktay et al., Attention U-Net, MIDL 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn


class AttentionGate(nn.Module):
    """``x * sigmoid(psi(relu(W_x x + up(W_g g))))``: the gating signal ``g`` (coarser) weights each
    voxel of the skip ``x``. ``W_x``, ``W_g`` and ``psi`` are 1x1x1 convolutions followed by a norm;
    ``W_g g`` is resampled (trilinear) to ``x``'s grid. One sigmoid, so the gate spans (0, 1).

    Args:
        in_channels: channels of the skip ``x``.
        gating_channels: channels of the gating signal ``g``.
        inter_channels: channels of the intermediate map (``F_int``).
        norm: norm after each 1x1 convolution (MONAI norm name), ``None`` for none.
    """

    def __init__(
        self, in_channels: int, gating_channels: int, inter_channels: int, norm: str | None = "batch"
    ) -> None:
        super().__init__()
        def conv(cin: int, cout: int) -> Convolution:
            return Convolution(3, cin, cout, kernel_size=1, act=None, norm=norm, bias=True)

        self.W_x = conv(in_channels, inter_channels)
        self.W_g = conv(gating_channels, inter_channels)
        self.psi = conv(inter_channels, 1)

    def gate(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The attention coefficients ``(B, 1, D, H, W)`` in (0, 1)."""
        gating = F.interpolate(self.W_g(g), size=x.shape[2:], mode="trilinear", align_corners=False)
        return torch.sigmoid(self.psi(F.relu(self.W_x(x) + gating)))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_x, D, H, W)``; ``g``: ``(B, C_g, d, h, w)``, coarser. Returns ``(B, C_x, D, H, W)``."""
        return x * self.gate(x, g)
