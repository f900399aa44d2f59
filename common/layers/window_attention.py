"""Window self-attention, stage 1 of MT-UNet's LGG-SA (Wang et al., ICASSP 2022), in 3D."""

from __future__ import annotations

import torch
from torch import nn

from common.layers.self_attention import MultiHeadSelfAttention
from common.layers.windows import from_windows, to_windows


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ``window^3`` windows (local context).

    Any grid size: the map is zero-padded up to a multiple of ``window`` and cropped back; padded
    positions are masked out of every softmax, so the output of a real voxel does not depend on the
    padding. Windows of all samples go through one ``scaled_dot_product_attention`` call (windows are
    batch entries; tokens of different windows or samples never meet).

    Args:
        hidden_size: channels ``C``.
        window_size: window edge in voxels.
        num_heads: attention heads; must divide ``C``.
        dropout_rate: dropout on the attention weights and output, in training only.
        qkv_bias: whether the query/key/value projection has a bias.
    """

    def __init__(
        self, hidden_size: int, window_size: int, num_heads: int = 1, dropout_rate: float = 0.0, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.attention = MultiHeadSelfAttention(hidden_size, num_heads, dropout_rate, qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, D, H, W)``; returns the same shape."""
        windows, valid = to_windows(x, self.window_size)
        batch, count, length, channels = windows.shape
        padded = any(size % self.window_size for size in x.shape[2:])
        key_mask = valid.repeat(batch, 1) if padded else None
        attended = self.attention(windows.reshape(batch * count, length, channels), key_mask)
        return from_windows(attended.view(batch, count, length, channels), x.shape[2:], self.window_size)
