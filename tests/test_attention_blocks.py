"""Attention blocks of the papers, each against a plain reference formulation, plus the properties
every block must have: odd and even grids, gradients to every parameter, batch independence,
device-agnostic, traceable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from common.layers import (
    AsymmetricFusionBlock,
    AsymmetricPyramidBlock,
    AttentionGate,
    ChannelAttention,
    ExternalAttention,
    GaussianAxialAttention,
    DynamicWindowAggregation,
    GlobalAggregationBlock,
    GuidedAttentionModule,
    GuidedAttentionOutput,
    LocalGlobalGaussianAttention,
    PositionAttention,
    PyramidPoolingSampler,
    WindowAttention,
)
from common.layers.pyramid_attention import PYRAMID_SIZES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
GRIDS = [(6, 6, 6), (5, 7, 3)]
TOL = {"atol": 1e-4, "rtol": 1e-4}


def randomise_(module: torch.nn.Module) -> torch.nn.Module:
    """Give zero-initialised parameters (``gamma``, ANN's output projection) non-zero values, so
    that the reference comparisons and the gradient checks exercise every path."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if not parameter.abs().sum():
                parameter.copy_(torch.randn_like(parameter) * 0.5)
    return module


# --- reference formulations -------------------------------------------------------------------


def reference_global_aggregation(block: GlobalAggregationBlock, x: torch.Tensor) -> torch.Tensor:
    """One sample and one head at a time, explicit softmax(q^T k / sqrt(d)) over all positions."""
    query, key, value = block.query(x), block.key(x), block.value(x)
    heads = block.num_heads
    samples = []
    for b in range(x.shape[0]):
        q = query[b].flatten(1).chunk(heads)
        k = key[b].flatten(1).chunk(heads)
        v = value[b].flatten(1).chunk(heads)
        outs = [v[h] @ torch.softmax(q[h].T @ k[h] / q[h].shape[0] ** 0.5, dim=-1).T for h in range(heads)]
        samples.append(torch.cat(outs).unflatten(1, query.shape[2:]))
    return block.out(torch.stack(samples))


def reference_position_attention(block: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """DANet: ``out_j = sum_i softmax_i(q_j . k_i) v_i``; pooled grid and trilinear resampling."""
    pooled = F.avg_pool3d(x, block.downsample, ceil_mode=True) if block.downsample > 1 else x
    q, k, v = (conv(pooled).flatten(2) for conv in (block.query, block.key, block.value))
    attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N), row j: weights of position j
    out = (v @ attention.transpose(1, 2)).view(v.shape[0], v.shape[1], *pooled.shape[2:])
    out = F.interpolate(out, size=x.shape[2:], mode="trilinear", align_corners=False) if block.downsample > 1 else out
    return block.gamma * out + x


def reference_channel_attention(block: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """DANet's formulation, with ``max(E) - E`` logits."""
    f = x.flatten(2)
    energy = f @ f.transpose(1, 2)
    attention = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
    return block.gamma * (attention @ f).view_as(x) + x


def _pyramid_context(block, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    sampler = block.sampler
    q, k, v = query.flatten(2), sampler(key), sampler(value)
    attention = torch.softmax(q.transpose(1, 2) @ k / q.shape[1] ** 0.5, dim=-1)  # (B, N, S)
    return block.project((v @ attention.transpose(1, 2)).unflatten(2, query.shape[2:]))


def reference_afnb(block: AsymmetricFusionBlock, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    context = _pyramid_context(block, block.query(high), block.key(low), block.value(low))
    return block.fuse(torch.cat([context, high], dim=1))


def reference_apnb(block: AsymmetricPyramidBlock, x: torch.Tensor) -> torch.Tensor:
    shared = block.query_key(x)
    return block.fuse(torch.cat([_pyramid_context(block, shared, shared, block.value(x)), x], dim=1))


def reference_external_attention(block: ExternalAttention, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    heads = block.expand(x).view(b, n, block.num_heads, -1).permute(0, 2, 1, 3)
    logits = heads @ block.memory_key.weight.T  # (B, h, N, S)
    attention = logits.exp() / logits.exp().sum(dim=2, keepdim=True)  # softmax over the tokens
    attention = attention / (1e-9 + attention.sum(dim=-1, keepdim=True))  # L1 over the memory
    out = attention @ block.memory_value.weight.T
    return block.proj(out.permute(0, 2, 1, 3).reshape(b, n, -1))


def reference_attention_gate(gate: AttentionGate, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Without norms: 1x1 convolutions as channel matmuls, one sigmoid."""
    def conv1x1(block, t):
        conv = block.conv
        return torch.einsum("oi,bi...->bo...", conv.weight.flatten(1), t) + conv.bias.view(1, -1, 1, 1, 1)

    gating = F.interpolate(conv1x1(gate.W_g, g), size=x.shape[2:], mode="trilinear", align_corners=False)
    return x * torch.sigmoid(conv1x1(gate.psi, torch.relu(conv1x1(gate.W_x, x) + gating)))


def reference_gaussian_axial(block: GaussianAxialAttention, x: torch.Tensor) -> torch.Tensor:
    """A loop over positions, heads and axes: each position's logits over its own line."""
    b_size, channels, *grid = x.shape
    heads = block.num_heads
    d = channels // heads
    q, k, v = block.qkv(x.permute(0, 2, 3, 4, 1)).chunk(3, dim=-1)
    out = torch.zeros(b_size, *grid, channels, device=x.device)
    for b in range(b_size):
        for position in torch.cartesian_prod(*(torch.arange(n) for n in grid)).tolist():
            for head in range(heads):
                ch = slice(head * d, (head + 1) * d)
                for axis, length in enumerate(grid):
                    others = [tuple(position[:axis] + [p] + position[axis + 1 :]) for p in range(length)]
                    logits = torch.stack([
                        q[(b, *position)][ch] @ k[(b, *o)][ch] / d**0.5 - block.shift[head] * (position[axis] - o[axis]) ** 2
                        for o in others
                    ])
                    weights = torch.softmax(logits, dim=0)
                    out[(b, *position)][ch] += sum(w * v[(b, *o)][ch] for w, o in zip(weights, others))
    return block.proj(out).permute(0, 4, 1, 2, 3)


def _window_slices(grid: tuple, window: int) -> list[tuple[slice, ...]]:
    """Every window of ``grid`` as slices, in raster order, the last ones cut at the border."""
    starts = torch.cartesian_prod(*(torch.arange(0, n, window) for n in grid)).view(-1, 3).tolist()
    return [tuple(slice(s, s + window) for s in start) for start in starts]


def reference_window_attention(block: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """A loop over windows: each window cut from the unpadded map (no padding exists to leak), one
    explicit softmax attention per sample and head among its real voxels."""
    attention = block.attention
    heads, d = attention.num_heads, attention.head_dim
    out = torch.zeros_like(x)
    for window in _window_slices(tuple(x.shape[2:]), block.window_size):
        region = x[(slice(None), slice(None), *window)]
        tokens = region.flatten(2).transpose(1, 2)  # (B, n, C)
        q, k, v = (t.unflatten(-1, (heads, d)).transpose(1, 2) for t in attention.qkv(tokens).chunk(3, dim=-1))
        mixed = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1) @ v
        projected = attention.out_proj(mixed.transpose(1, 2).flatten(2))
        out[(slice(None), slice(None), *window)] = projected.transpose(1, 2).view_as(region)
    return out


def reference_window_aggregation(block: DynamicWindowAggregation, x: torch.Tensor) -> torch.Tensor:
    """A loop over windows: mean of the real voxels, one logit per voxel from the linear layer's row
    for its position inside the window, softmax, weighted sum."""
    w = block.window_size
    grid = tuple(x.shape[2:])
    counts = [-(-n // w) for n in grid]
    out = torch.zeros(x.shape[0], x.shape[1], *counts)
    for window in _window_slices(grid, w):
        region = x[(slice(None), slice(None), *window)]
        rows = [(i * w + j) * w + k for i in range(region.shape[2]) for j in range(region.shape[3]) for k in range(region.shape[4])]
        logits = (region.flatten(2).mean(dim=2) @ block.weights.weight[rows].T) + block.weights.bias[rows]
        pooled = (region.flatten(2) * torch.softmax(logits, dim=-1)[:, None, :]).sum(dim=2)
        out[(slice(None), slice(None), *(s.start // w for s in window))] = pooled
    return out


def reference_lgg_attention(block: LocalGlobalGaussianAttention, x: torch.Tensor) -> torch.Tensor:
    local = reference_window_attention(block.local_attention, x)
    aggregated = reference_window_aggregation(block.aggregation, local)
    global_context = reference_gaussian_axial(block.global_attention, aggregated)
    upsampled = F.interpolate(global_context, size=x.shape[2:], mode="trilinear", align_corners=False)
    return block.fuse(torch.cat([local, upsampled], dim=1))


def reference_guided_attention(block: GuidedAttentionModule, features: torch.Tensor, multiscale: torch.Tensor) -> tuple:
    """The paper's composition on the reference PAM and CAM; the convolutions are the block's own."""
    x = torch.cat([features, multiscale], dim=1)
    attended = reference_position_attention(block.position_attention, x) + reference_channel_attention(block.channel_attention, x)
    latent = block.encoder(x)
    reconstruction = block.decode(latent, x.shape[2:])
    return GuidedAttentionOutput(block.attention_map(reconstruction * attended) * multiscale, reconstruction, latent)


# --- blocks under test: (block factory, input factory, reference) ------------------------------

Case = tuple[Callable[[], torch.nn.Module], Callable[[tuple, int], tuple], Callable]


def _maps(channels: int) -> Callable[[tuple, int], tuple]:
    return lambda grid, batch: (torch.randn(batch, channels, *grid),)


CASES: dict[str, Case] = {
    "gab-same": (lambda: GlobalAggregationBlock(8, 6, 8, 12, num_heads=2, query_transform="same"), _maps(8),
                 reference_global_aggregation),
    "gab-down": (lambda: GlobalAggregationBlock(8, 6, 8, 12, num_heads=2, query_transform="down"), _maps(8),
                 reference_global_aggregation),
    "gab-up": (lambda: GlobalAggregationBlock(8, 6, 8, 12, num_heads=4, query_transform="up"), _maps(8),
               reference_global_aggregation),
    "pam": (lambda: PositionAttention(16), _maps(16), reference_position_attention),
    "pam-pooled": (lambda: PositionAttention(16, downsample=2), _maps(16), reference_position_attention),
    "cam": (lambda: ChannelAttention(), _maps(6), reference_channel_attention),
    "afnb": (lambda: AsymmetricFusionBlock(8, 12, 10, 6, 7, pool_sizes=(1, 2, 3)),
             lambda grid, batch: (torch.randn(batch, 8, *grid), torch.randn(batch, 12, *grid)), reference_afnb),
    "apnb": (lambda: AsymmetricPyramidBlock(12, 10, 6, 7, pool_sizes=(1, 2, 3)), _maps(12), reference_apnb),
    "external": (lambda: ExternalAttention(16, num_heads=8, memory_units=8),
                 lambda grid, batch: (torch.randn(batch, grid[0] * grid[1] * grid[2], 16),),
                 reference_external_attention),
    "gaussian-axial": (lambda: GaussianAxialAttention(8, num_heads=2), _maps(8), reference_gaussian_axial),
    "window": (lambda: WindowAttention(8, window_size=3, num_heads=2), _maps(8), reference_window_attention),
    "window-aggregation": (lambda: DynamicWindowAggregation(8, window_size=2), _maps(8), reference_window_aggregation),
    "lgg": (lambda: LocalGlobalGaussianAttention(8, window_size=2, num_heads=2), _maps(8), reference_lgg_attention),
    "guided": (lambda: GuidedAttentionModule(6, 10, latent_channels=12, attention_downsample=2),
               lambda grid, batch: (torch.randn(batch, 6, *grid), torch.randn(batch, 10, *grid)),
               reference_guided_attention),
    "gate": (lambda: AttentionGate(8, 12, 6, norm=None),
             lambda grid, batch: (torch.randn(batch, 8, *grid), torch.randn(batch, 12, *(max(s // 2, 1) for s in grid))),
             reference_attention_gate),
}


def outputs(result: torch.Tensor | tuple) -> tuple[torch.Tensor, ...]:
    """A block's result as a tuple of tensors (the guided attention module returns three)."""
    return tuple(result) if isinstance(result, tuple) else (result,)


def build(name: str, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise_(CASES[name][0]()).to(device).eval()


def inputs(name: str, grid: tuple, batch: int = 2, device: str = "cpu") -> tuple:
    torch.manual_seed(2)
    return tuple(t.to(device) for t in CASES[name][1](grid, batch))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid", GRIDS, ids=["even", "odd"])
@pytest.mark.parametrize("name", list(CASES))
def test_block_matches_reference(name: str, grid: tuple, device: str) -> None:
    block, args = build(name, device), inputs(name, grid, device=device)
    with torch.no_grad():
        torch.testing.assert_close(block(*args), CASES[name][2](block, *args), **TOL)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_reach_every_parameter(name: str) -> None:
    block = build(name).train()
    sum((out * torch.randn_like(out)).sum() for out in outputs(block(*inputs(name, (5, 6, 4))))).backward()
    assert [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


@pytest.mark.parametrize("name", list(CASES))
def test_batch_independence(name: str) -> None:
    block = build(name)
    args = inputs(name, (5, 6, 4))
    changed = tuple(t.clone() for t in args)
    for t in changed:
        t[1] = torch.randn_like(t[1])
    with torch.no_grad():
        for original, perturbed in zip(outputs(block(*args)), outputs(block(*changed))):
            torch.testing.assert_close(original[0], perturbed[0])


@pytest.mark.parametrize("name", list(CASES))
def test_traces(name: str) -> None:
    block, args = build(name), inputs(name, (6, 6, 6))
    traced = torch.jit.trace(block, args)
    with torch.no_grad():
        torch.testing.assert_close(traced(*args), block(*args))


def test_global_aggregation_query_grids() -> None:
    x = torch.randn(1, 8, 5, 6, 7)
    expected = {"same": (5, 6, 7), "down": (3, 3, 4), "up": (10, 12, 14)}
    for transform, grid in expected.items():
        block = GlobalAggregationBlock(8, 4, 8, 8, num_heads=2, query_transform=transform)
        assert block(x).shape == (1, 4, *grid)


def test_pyramid_sampler_takes_756_positions_in_3d() -> None:
    x = torch.randn(2, 3, 10, 9, 11)
    sampled = PyramidPoolingSampler()(x)
    assert sampled.shape == (2, 3, 756) == (2, 3, PyramidPoolingSampler().num_positions)
    torch.testing.assert_close(sampled[..., 0], x.mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("grid", [(10, 9, 11), (4, 5, 3), (12, 12, 12)])
def test_pyramid_sampler_is_adaptive_average_pooling(grid: tuple[int, int, int]) -> None:
    """The separable matrix form equals ``F.adaptive_avg_pool3d``, on grids the sizes do not divide
    and on grids smaller than the largest pool."""
    x = torch.randn(2, 3, *grid, dtype=torch.float64)
    expected = torch.cat([F.adaptive_avg_pool3d(x, size).flatten(2) for size in PYRAMID_SIZES], dim=2)
    torch.testing.assert_close(PyramidPoolingSampler()(x), expected)


def test_pyramid_blocks_are_not_zero_at_initialisation() -> None:
    """The zero-initialised projection silences only the context: the input still goes through the
    fusion (the seed's blocks returned the context alone, i.e. zeros)."""
    torch.manual_seed(0)
    x = torch.randn(2, 12, 6, 6, 6)
    assert AsymmetricPyramidBlock(12, 10, 6, 7).eval()(x).abs().sum() > 0
    assert AsymmetricFusionBlock(8, 12, 10, 6, 7).eval()(torch.randn(2, 8, 6, 6, 6), x).abs().sum() > 0


def test_attention_gate_spans_zero_to_one() -> None:
    """One sigmoid: gates go below 0.5 (a second sigmoid would squash them into [0.5, 0.73])."""
    torch.manual_seed(0)
    gate = AttentionGate(4, 4, 4)
    coefficients = gate.gate(torch.randn(2, 4, 8, 8, 8) * 5, torch.randn(2, 4, 4, 4, 4) * 5)
    assert coefficients.min() < 0.2 and coefficients.max() > 0.75  # both outside [0.5, 0.73]


def test_danet_residual_starts_as_identity() -> None:
    x = torch.randn(1, 16, 4, 4, 4)
    torch.testing.assert_close(PositionAttention(16)(x), x)
    torch.testing.assert_close(ChannelAttention()(x), x)


def test_tokens_are_contiguous_for_the_fused_kernel() -> None:
    """SDPA's memory-lean CPU kernel needs a unit stride on the last dimension (see ``to_tokens``)."""
    from common.layers import from_tokens, to_tokens

    x = torch.randn(2, 8, 5, 6, 7)
    tokens = to_tokens(x, num_heads=2)
    assert tokens.shape == (2, 2, 210, 4) and tokens.is_contiguous()
    torch.testing.assert_close(from_tokens(tokens, (5, 6, 7)), x)


@pytest.mark.parametrize("d_k, d_v", [(8, 8), (4, 16), (6, 10), (12, 5)])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_fused_attention_any_width_matches_explicit(d_k: int, d_v: int, scale: float | None) -> None:
    from common.layers import fused_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 11, d_k), torch.randn(2, 3, 13, d_k), torch.randn(2, 3, 13, d_v)
    logits = q @ k.transpose(-1, -2) * (d_k**-0.5 if scale is None else scale)
    torch.testing.assert_close(fused_attention(q, k, v, scale=scale), torch.softmax(logits, dim=-1) @ v, **TOL)


def test_gaussian_axial_shift_stays_positive() -> None:
    block = GaussianAxialAttention(8, num_heads=2, initial_shift=0.3)
    torch.testing.assert_close(block.shift, torch.full((2,), 0.3))
    with torch.no_grad():
        block.raw_shift.fill_(-20.0)
    assert (block.shift > 0).all()
