"""Multi-head self-attention over a token sequence, on ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention whose attention runs through the fused SDPA kernel.

    The ``N x N`` attention matrix is never materialised in Python: PyTorch picks a flash or
    memory-efficient kernel where one exists for the device and dtype. Parameter names (``qkv``,
    ``out_proj``) and the channel order of the fused projection, ``(qkv, heads, head_dim)``, are
    those of :class:`monai.networks.blocks.SABlock`, so its weights load unchanged.

    Args:
        hidden_size: channels ``C`` of each token.
        num_heads: number of heads; must divide ``hidden_size``.
        dropout_rate: dropout on the attention weights and on the output, in training only.
        qkv_bias: whether the fused query/key/value projection has a bias.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout_rate: float = 0.0, qkv_bias: bool = False) -> None:
        super().__init__()
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}.")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout_rate = dropout_rate
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.drop_output = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, N, C)`` tokens; ``key_mask``: optional boolean ``(B, N)``, ``False`` for tokens
        no query may attend to (padding). Returns ``(B, N, C)``."""
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout_p = self.dropout_rate if self.training else 0.0
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=dropout_p)
        return self.drop_output(self.out_proj(out.transpose(1, 2).reshape(batch, tokens, channels)))
