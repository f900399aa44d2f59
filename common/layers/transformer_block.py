"""Pre-norm ViT encoder block: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))``."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.blocks import MLPBlock
from torch import nn

from common.layers.self_attention import MultiHeadSelfAttention

# MONAI's TransformerBlock always registers a LayerNorm for optional cross-attention, used only when
# cross-attention is on; UNETR never uses it, so we accept its weights on load and drop them.
_UNUSED_MONAI_KEYS = ("norm_cross_attn.weight", "norm_cross_attn.bias")


class TransformerBlock(nn.Module):
    """ViT encoder block with fused self-attention.

    Parameter names match :class:`monai.networks.blocks.TransformerBlock` (``norm1``, ``attn``,
    ``norm2``, ``mlp``), so a MONAI ViT or UNETR state dict loads strictly; the unused
    ``norm_cross_attn`` entries of a MONAI state dict are dropped on load.

    Args:
        hidden_size: channels ``C`` of each token.
        mlp_dim: hidden width of the MLP.
        num_heads: number of attention heads.
        dropout_rate: dropout in attention and MLP.
        qkv_bias: whether the query/key/value projection has a bias.
    """

    def __init__(
        self, hidden_size: int, mlp_dim: int, num_heads: int, dropout_rate: float = 0.0, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        self.mlp = MLPBlock(hidden_size, mlp_dim, dropout_rate)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.attn = MultiHeadSelfAttention(hidden_size, num_heads, dropout_rate, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.register_load_state_dict_pre_hook(_drop_unused_monai_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, N, C)``; returns ``(B, N, C)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _drop_unused_monai_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in _UNUSED_MONAI_KEYS:
        state_dict.pop(prefix + key, None)
