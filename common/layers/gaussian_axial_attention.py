"""Gaussian-weighted axial attention of MT-UNet's LGG-SA (Wang et al., ICASSP 2022), in 3D."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GaussianAxialAttention(nn.Module):
    """Axial self-attention along D, H and W whose logits fall off with distance; results summed.

    Along each axis, position ``i`` attends over the positions ``j`` of its own line with logits
    ``q_i . k_j / sqrt(d) - shift_h * (i - j)^2``, softmax over ``j``. ``shift_h > 0`` is learned per
    head (a softplus keeps it positive). Vectorised: one ``scaled_dot_product_attention`` per axis
    over all lines at once, the Gaussian term an additive ``(heads, L, L)`` bias — no loop over
    positions, no per-position tensors.

    Args:
        hidden_size: channels ``C``.
        num_heads: attention heads; must divide ``C``.
        initial_shift: starting value of every head's ``shift``.
    """

    def __init__(self, hidden_size: int, num_heads: int = 1, initial_shift: float = 0.5) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide hidden_size ({hidden_size}).")
        if initial_shift <= 0:
            raise ValueError(f"initial_shift must be positive, got {initial_shift}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        inverse_softplus = initial_shift + math.log(-math.expm1(-initial_shift))
        self.raw_shift = nn.Parameter(torch.full((num_heads,), inverse_softplus))

    @property
    def shift(self) -> torch.Tensor:
        """The positive per-head fall-off ``(heads,)``."""
        return F.softplus(self.raw_shift)

    def _along(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, axis: int) -> torch.Tensor:
        """Attention along ``axis`` (1, 2 or 3) of ``(B, D, H, W, heads, d)`` tensors."""
        length = q.shape[axis]
        lines = lambda t: t.movedim(axis, -3).transpose(-3, -2)  # (B, o1, o2, heads, L, d)
        q_l, k_l, v_l = (lines(t) for t in (q, k, v))
        outer = q_l.shape[:3]
        flat = lambda t: t.reshape(-1, *t.shape[3:]).contiguous()
        position = torch.arange(length, device=q.device, dtype=q.dtype)
        bias = -self.shift.view(-1, 1, 1) * (position[:, None] - position[None, :]).square()
        out = F.scaled_dot_product_attention(flat(q_l), flat(k_l), flat(v_l), attn_mask=bias)
        return out.reshape(*outer, *out.shape[1:]).transpose(-3, -2).movedim(-3, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, D, H, W)``; returns the same shape."""
        tokens = x.permute(0, 2, 3, 4, 1)
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)) for t in self.qkv(tokens).chunk(3, dim=-1))
        summed = sum(self._along(q, k, v, axis) for axis in (1, 2, 3))
        return self.proj(summed.flatten(-2)).permute(0, 4, 1, 2, 3)
