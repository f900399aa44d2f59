"""Helpers shared by the encoder-decoder networks."""

from __future__ import annotations

import torch
from torch import nn


def run_stages(stages: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Apply ``stages`` in sequence; the output of every stage, finest first (the skips)."""
    outputs = []
    for stage in stages:
        x = stage(x)
        outputs.append(x)
    return outputs
