"""Global aggregation block (Wang et al., Non-local U-Nets for Biomedical Image Segmentation, AAAI 2020)."""

from __future__ import annotations

from typing import Literal

import torch
from monai.networks.blocks import Convolution
from torch import nn

from common.layers.tokens import from_tokens, fused_attention, to_tokens

QueryTransform = Literal["same", "down", "up"]


class GlobalAggregationBlock(nn.Module):
    """Multi-head attention of every output position over all input positions.

    ``K = conv1x1(X)``, ``V = conv1x1(X)``, ``Q = QueryTransform(X)`` where the query transform is a
    1x1 convolution (``"same"``: output on X's grid), a 3x3 stride-2 convolution (``"down"``: half
    the size, rounded up) or a 3x3 stride-2 transposed convolution (``"up"``: twice the size). Each
    sample and each head attends on its own (``scaled_dot_product_attention`` over ``(B, heads, N,
    d)``); the result is folded back to Q's grid and projected by a 1x1 convolution.

    Args:
        in_channels: channels of X.
        out_channels: channels of the output.
        key_channels: total channels of queries and keys (split over heads).
        value_channels: total channels of values (split over heads).
        num_heads: attention heads; must divide ``key_channels`` and ``value_channels``.
        query_transform: ``"same"``, ``"down"`` or ``"up"``.
        dropout_rate: dropout on the attention weights, in training only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        key_channels: int,
        value_channels: int,
        num_heads: int = 1,
        query_transform: QueryTransform = "same",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if key_channels % num_heads or value_channels % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide key_channels ({key_channels}) and value_channels ({value_channels}).")
        query_args = {"same": {"kernel_size": 1}, "down": {"kernel_size": 3, "strides": 2},
                      "up": {"kernel_size": 3, "strides": 2, "is_transposed": True}}
        if query_transform not in query_args:
            raise ValueError(f"query_transform must be one of {sorted(query_args)}, got {query_transform!r}.")
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.query = Convolution(3, in_channels, key_channels, conv_only=True, **query_args[query_transform])
        self.key = Convolution(3, in_channels, key_channels, kernel_size=1, conv_only=True)
        self.value = Convolution(3, in_channels, value_channels, kernel_size=1, conv_only=True)
        self.out = Convolution(3, value_channels, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, D, H, W)``; returns ``(B, C_out, *query_grid)``."""
        query = self.query(x)
        attended = fused_attention(
            to_tokens(query, self.num_heads), to_tokens(self.key(x), self.num_heads), to_tokens(self.value(x), self.num_heads),
            dropout_p=self.dropout_rate if self.training else 0.0,
        )
        return self.out(from_tokens(attended, query.shape[2:]))
