"""Asymmetric non-local blocks with pyramid-pooled keys and values (Zhu et al., Asymmetric Non-local
Neural Networks for Semantic Segmentation, ICCV 2019), in 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

from common.layers.tokens import from_tokens, fused_attention, to_tokens

PYRAMID_SIZES = (1, 3, 6, 8)  # 1 + 27 + 216 + 512 = 756 sampled positions in 3D


def adaptive_average_matrix(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """``(out_size, in_size)`` matrix of 1D adaptive average pooling (PyTorch's bins: output ``i``
    averages inputs ``floor(i * in / out)`` to ``ceil((i + 1) * in / out) - 1``), dtype and device of
    ``like``. Built from Python integers, so that a trace records it as a constant (ONNX integer
    division truncates where Python floors)."""
    rows = []
    for i in range(out_size):
        start, end = i * in_size // out_size, -(-(i + 1) * in_size // out_size)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(in_size)])
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


class PyramidPoolingSampler(nn.Module):
    """Adaptive average pools of sizes ``s^3``, flattened and concatenated: ``(B, C, D, H, W)`` to
    ``(B, C, sum(s^3))`` — a fixed number of positions whatever the grid.

    A 3D adaptive average is separable, so each pool is three small matrix products
    (:func:`adaptive_average_matrix` per axis): exactly ``F.adaptive_avg_pool3d``, but also for
    sizes that do not divide the grid in an ONNX export, which has no such operator.

    Args:
        sizes: output size of each pool along every axis.
    """

    def __init__(self, sizes: Sequence[int] = PYRAMID_SIZES) -> None:
        super().__init__()
        self.sizes = tuple(sizes)

    @property
    def num_positions(self) -> int:
        return sum(s**3 for s in self.sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pools = []
        for size in self.sizes:
            d, h, w = (adaptive_average_matrix(n, size, x) for n in x.shape[2:])
            pools.append(torch.einsum("bcdhw,xd,yh,zw->bcxyz", x, d, h, w).flatten(2))
        return torch.cat(pools, dim=2)


class _PyramidAttention(nn.Module):
    """Queries of the target map attend over pyramid-sampled keys and values (one head, logits
    scaled by ``key_channels^-1/2``); the context is projected by a zero-initialised 1x1 conv, then
    concatenated with the target map and fused by 1x1 conv + norm + dropout."""

    def __init__(
        self, value_channels: int, context_channels: int, out_channels: int, pool_sizes: Sequence[int], norm: str,
        dropout_rate: float, residual_channels: int,
    ) -> None:
        super().__init__()
        self.sampler = PyramidPoolingSampler(pool_sizes)
        self.project = nn.Conv3d(value_channels, context_channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)
        self.fuse = Convolution(
            3, context_channels + residual_channels, out_channels, kernel_size=1, act=None, norm=norm, dropout=dropout_rate
        )

    def context(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        attended = fused_attention(
            to_tokens(query), to_tokens(self.sampler(key)), to_tokens(self.sampler(value))
        )
        return self.project(from_tokens(attended, query.shape[2:]))


class AsymmetricFusionBlock(_PyramidAttention):
    """AFNB: queries from the high-level map ``X_h``, keys and values pyramid-sampled from the
    low-level map ``X_l`` (same grid or not); output ``fuse(cat(context, X_h))``.

    Args:
        low_channels: channels of ``X_l`` (keys, values).
        high_channels: channels of ``X_h`` (queries).
        out_channels: output channels (and channels of the context).
        key_channels: channels of queries and keys.
        value_channels: channels of values.
        pool_sizes: pyramid pool sizes.
        norm: norm of the query/key projections and of the fusion (MONAI norm name).
        dropout_rate: dropout after the fusion.
    """

    def __init__(
        self, low_channels: int, high_channels: int, out_channels: int, key_channels: int, value_channels: int,
        pool_sizes: Sequence[int] = PYRAMID_SIZES, norm: str = "batch", dropout_rate: float = 0.05,
    ) -> None:
        super().__init__(value_channels, out_channels, out_channels, pool_sizes, norm, dropout_rate, high_channels)
        self.query = Convolution(3, high_channels, key_channels, kernel_size=1, norm=norm, act="relu")
        self.key = Convolution(3, low_channels, key_channels, kernel_size=1, norm=norm, act="relu")
        self.value = nn.Conv3d(low_channels, value_channels, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """``low``: ``(B, C_l, *grid_l)``; ``high``: ``(B, C_h, *grid_h)``. Returns ``(B, C_out, *grid_h)``."""
        context = self.context(self.query(high), self.key(low), self.value(low))
        return self.fuse(torch.cat([context, high], dim=1))


class AsymmetricPyramidBlock(_PyramidAttention):
    """APNB: self-attention of a map over its own pyramid-sampled positions, with queries and keys
    from one shared projection; output ``fuse(cat(context, X))``.

    Args:
        in_channels: channels of ``X`` (and of the context).
        out_channels: output channels.
        key_channels: channels of the shared query/key projection.
        value_channels: channels of values.
        pool_sizes: pyramid pool sizes.
        norm: norm of the query/key projection and of the fusion (MONAI norm name).
        dropout_rate: dropout after the fusion.
    """

    def __init__(
        self, in_channels: int, out_channels: int, key_channels: int, value_channels: int,
        pool_sizes: Sequence[int] = PYRAMID_SIZES, norm: str = "batch", dropout_rate: float = 0.05,
    ) -> None:
        super().__init__(value_channels, in_channels, out_channels, pool_sizes, norm, dropout_rate, in_channels)
        self.query_key = Convolution(3, in_channels, key_channels, kernel_size=1, norm=norm, act="relu")
        self.value = nn.Conv3d(in_channels, value_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, D, H, W)``; returns ``(B, C_out, D, H, W)``."""
        query_key = self.query_key(x)
        context = self.context(query_key, query_key, self.value(x))
        return self.fuse(torch.cat([context, x], dim=1))
