"""3D feature maps to non-overlapping windows and back, for any grid size (zero padding + crop)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def window_grid(grid: Sequence[int], window: int) -> tuple[int, int, int]:
    """Number of windows along each axis of ``grid`` (rounded up: the last window is padded)."""
    return tuple(-(-size // window) for size in grid)


def to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, D, H, W)`` to windows ``(B, nW, window^3, C)`` and their validity ``(nW, window^3)``.

    The grid is zero-padded at its far end up to a multiple of ``window`` (``F.pad``, every axis);
    ``valid`` is ``False`` on padded positions so that attention and pooling can leave them out.
    Windows are in raster order over the window grid, tokens in raster order inside a window.
    """
    grid = x.shape[2:]
    counts = window_grid(grid, window)
    padding = [p for size, n in zip(reversed(grid), reversed(counts)) for p in (0, n * window - size)]
    ones = torch.ones(1, 1, *grid, dtype=torch.bool, device=x.device)
    valid = _partition(F.pad(ones, padding), counts, window)[0, ..., 0]
    return _partition(F.pad(x, padding), counts, window), valid


def from_windows(windows: torch.Tensor, grid: Sequence[int], window: int) -> torch.Tensor:
    """``(B, nW, window^3, C)`` back to ``(B, C, D, H, W)`` on ``grid``; inverse of :func:`to_windows`
    (the padding is cropped)."""
    nd, nh, nw = window_grid(grid, window)
    batch, channels = windows.shape[0], windows.shape[-1]
    blocks = windows.reshape(batch, nd, nh, nw, window, window, window, channels)
    padded = blocks.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(batch, channels, nd * window, nh * window, nw * window)
    return padded[:, :, : grid[0], : grid[1], : grid[2]]


def _partition(x: torch.Tensor, counts: Sequence[int], window: int) -> torch.Tensor:
    batch, channels = x.shape[:2]
    nd, nh, nw = counts
    blocks = x.reshape(batch, channels, nd, window, nh, window, nw, window)
    return blocks.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(batch, nd * nh * nw, window**3, channels)
