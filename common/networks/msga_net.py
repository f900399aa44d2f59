"""3D multi-scale self-guided attention network (Sinha & Dolz, Multi-scale self-guided attention for
medical image segmentation, IEEE JBHI 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UnetOutBlock, UnetResBlock
from torch import nn

from common.layers.guided_attention import GuidedAttentionModule
from common.networks.stages import run_stages


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
    per scale at full resolution, tripled the cost of a training step).

    In training mode ``forward`` returns a dict: ``logits`` (mean of the masks), ``masks`` (4),
    ``reconstructions`` (8 pairs of a step's input and its reconstruction) and ``latents`` (4 pairs
    of the two steps' latent codes), for :class:`common.losses.GuidedAttentionLoss`. In eval mode it
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
        res = lambda cin, cout, stride: UnetResBlock(3, cin, cout, 3, stride, norm_name)
        widths = [f, 2 * f, 4 * f, 8 * f]
        self.encoder = nn.ModuleList([res(in_channels, f, 1)] + [res(widths[i - 1], widths[i], 2) for i in range(1, 4)])
        self.reduce = nn.ModuleList(Convolution(3, w, c, kernel_size=1, norm=norm_name, act="relu") for w in widths)
        self.fuse = Convolution(3, 4 * c, c, kernel_size=3, norm=norm_name, act="relu")
        step = lambda: GuidedAttentionModule(c, c, attention_downsample=attention_downsample, norm=norm_name)
        self.first_steps = nn.ModuleList(step() for _ in widths)
        self.second_steps = nn.ModuleList(step() for _ in widths)
        self.mask_head = UnetOutBlock(3, c + f, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        """``x``: ``(B, in_channels, D, H, W)``; logits ``(B, out_channels, D, H, W)`` in eval mode,
        the dict described above in training mode."""
        features = run_stages(self.encoder, x)
        grid = features[self.attention_level].shape[2:]
        scales = [F.interpolate(r(t), size=grid, mode="trilinear", align_corners=False) for r, t in zip(self.reduce, features)]
        multiscale = self.fuse(torch.cat(scales, dim=1))
        masks, reconstructions, latents = [], [], []
        for scale, first, second in zip(scales, self.first_steps, self.second_steps):
            step1 = first(scale, multiscale)
            step2 = second(step1.output, multiscale)
            reconstructions += [(torch.cat([scale, multiscale], 1), step1.reconstruction),
                                (torch.cat([step1.output, multiscale], 1), step2.reconstruction)]
            latents.append((step1.latent, step2.latent))
            upsampled = F.interpolate(step2.output, size=features[0].shape[2:], mode="trilinear", align_corners=False)
            masks.append(self.mask_head(torch.cat([upsampled, features[0]], dim=1)))
        logits = torch.stack(masks).mean(dim=0)
        if not self.training:
            return logits
        return {"logits": logits, "masks": masks, "reconstructions": reconstructions, "latents": latents}
