"""Feature maps to attention tokens and back, per sample and per head (never mixing the two)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


MIN_FUSED_WIDTH = 16
"""Narrower queries and keys are zero-padded to this width: the fused CPU kernel is slower at narrower
widths (docs/benchmarks.md), and zero columns add nothing to the logits."""


def to_tokens(x: torch.Tensor, num_heads: int = 1) -> torch.Tensor:
    """``(B, C, *grid)`` to contiguous ``(B, heads, N, C / heads)`` with ``N = prod(grid)``.

    Contiguous on purpose: ``scaled_dot_product_attention`` takes its fused, memory-lean CPU kernel
    only when the last dimension has stride 1; on the transposed view it falls back to the explicit
    ``N x N`` path (docs/benchmarks.md).
    """
    return x.flatten(2).unflatten(1, (num_heads, -1)).transpose(-1, -2).contiguous()


def from_tokens(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``(B, heads, N, d)`` to ``(B, heads * d, *grid)``; inverse of :func:`to_tokens`."""
    return tokens.transpose(-1, -2).flatten(1, 2).unflatten(2, tuple(grid))


def fused_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` through ``scaled_dot_product_attention``, kept on its fused,
    memory-lean CPU kernel when values are wider than queries and keys (DANet's PAM: C/8 vs C).

    Queries and keys narrower than ``MIN_FUSED_WIDTH`` are zero-padded to it first (exact: zero
    columns add nothing to the logits). The kernel needs one head width for q, k and v. Values of
    width ``d_v = g * d_k`` are split into ``g`` groups attended as extra heads with the same q and
    k, which gives the same result with O(N) memory instead of the N x N matrix of the fallback
    path. Other widths are zero-padded to a common width (padded value columns are dropped). With
    dropout, each value group draws its own mask.

    Args:
        query: ``(B, h, N_q, d_k)``.
        key: ``(B, h, N_k, d_k)``.
        value: ``(B, h, N_k, d_v)``.
        scale: logit scale; default ``d_k^-1/2``.
        dropout_p: dropout on the attention weights.

    Returns:
        ``(B, h, N_q, d_v)``.
    """
    d_k, d_v = query.shape[-1], value.shape[-1]
    scale = d_k**-0.5 if scale is None else scale
    if d_k < MIN_FUSED_WIDTH:
        query, key = (F.pad(t, (0, MIN_FUSED_WIDTH - d_k)) for t in (query, key))
        d_k = MIN_FUSED_WIDTH
    if d_k == d_v:
        return F.scaled_dot_product_attention(query, key, value, scale=scale, dropout_p=dropout_p)
    if d_v % d_k == 0:
        groups = d_v // d_k
        b, h, n_q, n_k = query.shape[0], query.shape[1], query.shape[2], key.shape[2]
        repeat = lambda t, n: t.unsqueeze(2).expand(b, h, groups, n, d_k).reshape(b, h * groups, n, d_k)
        grouped = value.unflatten(-1, (groups, d_k)).transpose(2, 3).reshape(b, h * groups, n_k, d_k)
        out = F.scaled_dot_product_attention(repeat(query, n_q), repeat(key, n_k), grouped, scale=scale, dropout_p=dropout_p)
        return out.unflatten(1, (h, groups)).transpose(2, 3).flatten(-2)
    width = max(d_k, d_v)
    query, key = (F.pad(t, (0, width - d_k)) for t in (query, key))
    out = F.scaled_dot_product_attention(query, key, F.pad(value, (0, width - d_v)), scale=scale, dropout_p=dropout_p)
    return out[..., :d_v]
