"""3D MT-UNet (Wang et al., Mixed Transformer U-Net for Medical Image Segmentation, ICASSP 2022)."""

from __future__ import annotations

from functools import partial

import torch
from monai.networks.blocks import Convolution, MLPBlock, UnetOutBlock
from torch import nn

from common.layers.external_attention import ExternalAttention
from common.layers.lgg_attention import LocalGlobalGaussianAttention
from common.networks.stages import res_block, run_stages


class MixedTransformerModule(nn.Module):
    """MTM: LGG-SA then external attention, each in a pre-norm residual with an MLP.

    ``x = x + LGG(LN(x)); x = x + MLP(LN(x)); x = x + EA(LN(x)); x = x + MLP(LN(x))``, with the
    norms over channels at every voxel. Any grid size (LGG-SA pads and crops its windows).

    Args:
        hidden_size: channels ``C``.
        window_size: LGG-SA window edge in voxels.
        num_heads: heads of LGG-SA and of external attention.
        mlp_ratio: MLP width as a multiple of ``C``.
        memory_units: external attention memory size ``S``.
    """

    def __init__(self, hidden_size: int, window_size: int, num_heads: int, mlp_ratio: int = 2, memory_units: int = 64) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(4))
        self.local_global = LocalGlobalGaussianAttention(hidden_size, window_size, num_heads)
        self.external = ExternalAttention(hidden_size, num_heads, memory_units)
        self.mlps = nn.ModuleList(MLPBlock(hidden_size, mlp_ratio * hidden_size, 0.0) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, D, H, W)``; returns the same shape."""
        grid = x.shape[2:]
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        normed = self.norms[0](tokens).transpose(1, 2).unflatten(2, grid)
        tokens = tokens + self.local_global(normed).flatten(2).transpose(1, 2)
        tokens = tokens + self.mlps[0](self.norms[1](tokens))
        tokens = tokens + self.external(self.norms[2](tokens))
        tokens = tokens + self.mlps[1](self.norms[3](tokens))
        return tokens.transpose(1, 2).unflatten(2, grid)


class MTUNet(nn.Module):
    """U-Net with convolutional shallow stages and Mixed Transformer Modules at the deep stages.

    Encoder: residual blocks at full resolution and 1/2 (widths ``f``, ``2f``), then stride-2
    residual blocks to 1/4 and 1/8 (``4f``, ``8f``), each followed by ``depth`` MTMs. Decoder:
    stride-2 transposed convolution, concatenated skip, residual block; an MTM after the 1/4 step.
    Input grids must be divisible by 8; the MTMs take any grid (windows are padded and cropped).

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels).
        feature_size: width ``f`` of the first stage.
        num_heads: heads of every MTM (must divide ``4f``).
        window_size: LGG-SA window edge.
        depth: MTMs after each deep encoder stage.
        norm_name: MONAI norm of the convolution blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 16,
        num_heads: int = 4,
        window_size: int = 4,
        depth: int = 1,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        f = feature_size
        res = partial(res_block, norm_name=norm_name)
        mtm = partial(MixedTransformerModule, window_size=window_size, num_heads=num_heads)
        self.encoder = nn.ModuleList([
            res(in_channels, f),
            res(f, 2 * f, stride=2),
            nn.Sequential(res(2 * f, 4 * f, stride=2), *(mtm(4 * f) for _ in range(depth))),
            nn.Sequential(res(4 * f, 8 * f, stride=2), *(mtm(8 * f) for _ in range(depth))),
        ])
        widths = [(8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f)]
        self.upsample = nn.ModuleList(
            Convolution(3, c, fine, strides=2, kernel_size=3, is_transposed=True, conv_only=True) for c, fine in widths
        )
        self.decoder = nn.ModuleList([nn.Sequential(res(8 * f, 4 * f), mtm(4 * f)), res(4 * f, 2 * f), res(2 * f, f)])
        self.out = UnetOutBlock(3, f, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, D, H, W)``; returns logits ``(B, out_channels, D, H, W)``."""
        skips = run_stages(self.encoder, x)
        x = skips.pop()
        for upsample, decode in zip(self.upsample, self.decoder):
            x = decode(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.out(x)
