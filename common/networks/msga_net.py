"""3D multi-scale self-guided attention network (Sinha & Dolz, Multi-scale self-guided attention for
medical image segmentation, IEEE JBHI 2020)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UnetOutBlock
from torch import nn

from common.layers.guided_attention import GuidedAttentionModule
from common.networks.stages import res_block, run_stages


class MSGANet(nn.Module):
    """Residual encoder at 4 scales, fused multi-scale map, two guided attention steps per scale,
    one mask per scale.

    Encoder: residual blocks at full resolution and 1/2, 1/4, 1/8 (widths ``f, 2f, 4f, 8f``). Every
    scale is reduced to ``2f`` channels by a 1x1x1 convolution and resampled (trilinear) to the grid
    of encoder stage ``attention_level`` (1/2 by default), where attention works; ``F_ms`` is a
    3x3x3 convolution of their concatenation. Per scale, two chained
    :class:`common.layers.GuidedAttentionModule` steps (the second takes the first's output in
    place of ``F_s``). Each scale's refined map is upsampled to full resolution, concatenated with
    the full-resolution encoder features (CSF is thinner than the voxels of the attention grid) and
    turned into a mask by a 1x1x1 convolution shared by the scales (a 3x3x3 block there, run once
    per scale at full resolution, tripled the cost of a training step). That convolution is linear
    and trilinear resampling preserves constants, so ``forward`` applies the head's weights for the
    refined map before resampling: ``out_channels`` per scale are resampled instead of ``2f``
    (see :meth:`masks`; same masks up to rounding).

    In training mode ``forward`` returns a dict: ``logits`` (mean of the masks), ``masks`` (4),
    ``reconstructions`` (8 pairs of a step's input and its reconstruction) and ``latents`` (4 pairs
    of the two steps' latent codes), for :class:`common.workflow.losses.GuidedAttentionLoss`. In eval mode it
    returns the ``logits`` tensor alone, so that inferers and exports need nothing special.
    Input grids must be divisible by 8.

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels).
        feature_size: width ``f`` of the first stage.
        attention_level: encoder stage (1: 1/2, 2: 1/4, 3: 1/8) whose grid the attention steps work on.
        attention_downsample: pooling factor of the grid PAM attends on, relative to that grid.
        norm_name: MONAI norm of the convolution blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 16,
        attention_level: int = 1,
        attention_downsample: int = 2,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        if attention_level not in (1, 2, 3):
            raise ValueError(f"attention_level must be 1, 2 or 3, got {attention_level}.")
        self.attention_level = attention_level
        f, c = feature_size, 2 * feature_size
        res = partial(res_block, norm_name=norm_name)
        widths = [f, 2 * f, 4 * f, 8 * f]
        self.encoder = nn.ModuleList([res(in_channels, f)] + [res(widths[i - 1], widths[i], stride=2) for i in range(1, 4)])
        self.reduce = nn.ModuleList(Convolution(3, w, c, kernel_size=1, norm=norm_name, act="relu") for w in widths)
        self.fuse = Convolution(3, 4 * c, c, kernel_size=3, norm=norm_name, act="relu")
        step = partial(GuidedAttentionModule, feature_channels=c, multiscale_channels=c, attention_downsample=attention_downsample,
                       norm=norm_name)
        self.first_steps = nn.ModuleList(step() for _ in widths)
        self.second_steps = nn.ModuleList(step() for _ in widths)
        self.mask_head = UnetOutBlock(3, c + f, out_channels)

    def masks(self, refined: list[torch.Tensor], full: torch.Tensor) -> list[torch.Tensor]:
        """``mask_head(cat(resample(r), full))`` for every refined map ``r`` ``(B, 2f, d, h, w)``, with
        ``full`` the full-resolution features ``(B, f, D, H, W)``; masks ``(B, out_channels, D, H, W)``.
        Computed as ``resample(W_r r) + W_f full + b``, all scales resampled in one call."""
        head = self.mask_head.conv.conv
        c = refined[0].shape[1]
        projected = torch.cat([F.conv3d(r, head.weight[:, :c]) for r in refined], dim=1)
        shared = F.conv3d(full, head.weight[:, c:], head.bias)
        return [shared + m for m in resample(projected, full.shape[2:]).chunk(len(refined), dim=1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        """``x``: ``(B, in_channels, D, H, W)``; logits ``(B, out_channels, D, H, W)`` in eval mode,
        the dict described above in training mode."""
        features = run_stages(self.encoder, x)
        grid = features[self.attention_level].shape[2:]
        scales = [resample(r(t), grid) for r, t in zip(self.reduce, features)]
        multiscale = self.fuse(torch.cat(scales, dim=1))
        refined, reconstructions, latents = [], [], []
        for scale, first, second in zip(scales, self.first_steps, self.second_steps):
            step1 = first(scale, multiscale)
            step2 = second(step1.output, multiscale)
            reconstructions += [(torch.cat([scale, multiscale], 1), step1.reconstruction),
                                (torch.cat([step1.output, multiscale], 1), step2.reconstruction)]
            latents.append((step1.latent, step2.latent))
            refined.append(step2.output)
        masks = self.masks(refined, features[0])
        logits = torch.stack(masks).mean(dim=0)
        if not self.training:
            return logits
        return {"logits": logits, "masks": masks, "reconstructions": reconstructions, "latents": latents}


def resample(x: torch.Tensor, grid: torch.Size) -> torch.Tensor:
    """``x`` ``(B, C, d, h, w)`` trilinearly resampled to ``grid`` (returned as is when already on it)."""
    if x.shape[2:] == grid:
        return x
    return F.interpolate(x, size=grid, mode="trilinear", align_corners=False)
