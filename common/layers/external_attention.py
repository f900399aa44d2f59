"""External attention with memory units shared over the data set (Guo et al. 2021), as in the Mixed
Transformer Module of MT-UNet (Wang et al., ICASSP 2022)."""

from __future__ import annotations

import torch
from torch import nn


class ExternalAttention(nn.Module):
    """Tokens attend to ``memory_units`` learned keys and values instead of to each other: linear
    cost in the number of tokens.

    ``x`` is expanded to ``expansion * C`` channels and split into ``num_heads`` heads; per head,
    ``attn = M_k(x)`` against the memory keys, softmax over the *tokens* axis, then L1 normalisation
    over the *memory* axis (double normalisation); ``M_v(attn)`` reads the memory values, and a linear
    projects back to ``C``. Each sample is normalised over its own tokens.

    Args:
        hidden_size: channels ``C`` of each token.
        num_heads: heads after expansion; must divide ``expansion * hidden_size``.
        memory_units: memory size ``S`` (64 in MT-UNet).
        expansion: channel expansion before the heads (4 in MT-UNet).
        eps: guard of the L1 normalisation.
    """

    def __init__(
        self, hidden_size: int, num_heads: int = 8, memory_units: int = 64, expansion: int = 4, eps: float = 1e-9
    ) -> None:
        super().__init__()
        inner = hidden_size * expansion
        if inner % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide expansion * hidden_size ({inner}).")
        self.num_heads, self.eps = num_heads, eps
        self.expand = nn.Linear(hidden_size, inner)
        self.memory_key = nn.Linear(inner // num_heads, memory_units, bias=False)
        self.memory_value = nn.Linear(memory_units, inner // num_heads, bias=False)
        self.proj = nn.Linear(inner, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, N, C)`` tokens; returns ``(B, N, C)``."""
        heads = self.expand(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, h, N, d)
        attn = self.memory_key(heads).softmax(dim=-2)
        attn = attn / (self.eps + attn.sum(dim=-1, keepdim=True))
        return self.proj(self.memory_value(attn).transpose(1, 2).flatten(2))
