"""Dynamic-convolution window aggregation of MT-UNet's LGG-SA (Wang et al., ICASSP 2022), in 3D."""

from __future__ import annotations

import torch
from torch import nn

from common.layers.windows import to_windows, window_grid


class DynamicWindowAggregation(nn.Module):
    """Each ``window^3`` window to one token: a weighted sum of its tokens whose weights a linear
    layer predicts from the window's mean (a lightweight dynamic convolution), softmax over the
    window. Padded positions (grids that are not multiples of ``window``) are left out of the mean
    and of the softmax.

    Args:
        hidden_size: channels ``C``.
        window_size: window edge in voxels.
    """

    def __init__(self, hidden_size: int, window_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.weights = nn.Linear(hidden_size, window_size**3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, D, H, W)``; returns ``(B, C, ceil(D / w), ceil(H / w), ceil(W / w))``."""
        windows, valid = to_windows(x, self.window_size)
        valid = valid.to(x.dtype)
        mean = (windows * valid[..., None]).sum(dim=2) / valid.sum(dim=1)[:, None]
        logits = self.weights(mean).masked_fill(valid == 0, float("-inf"))
        aggregated = torch.einsum("bnl,bnlc->bnc", logits.softmax(dim=-1), windows)
        return aggregated.transpose(1, 2).unflatten(2, window_grid(x.shape[2:], self.window_size))
