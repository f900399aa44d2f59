"""Guided attention module of the multi-scale self-guided attention network (Sinha & Dolz, IEEE JBHI
2020), in 3D."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from common.layers.danet_attention import ChannelAttention, PositionAttention


class GuidedAttentionOutput(NamedTuple):
    """What one guided attention step returns (a tuple, so that tracing and export keep working)."""

    output: torch.Tensor  # (B, C_ms, D, H, W): attention map times the multi-scale features
    reconstruction: torch.Tensor  # (B, C_f + C_ms, D, H, W): the encoder-decoder's copy of its input
    latent: torch.Tensor  # (B, latent_channels, ceil(D/2), ceil(H/2), ceil(W/2)): the code of the guided loss


class GuidedAttentionModule(nn.Module):
    """One refinement step: ``x = cat(F_s, F_ms)`` goes through position plus channel attention (DANet
    residual form) and through an encoder-decoder that reconstructs ``x``; the attention map
    ``A = conv(decoded * (PAM(x) + CAM(x)))`` weights the multi-scale features, ``output = A * F_ms``.

    The encoder halves the grid (3x3x3 stride-2 convolution, then a 3x3x3 convolution to the latent
    width) and the decoder brings it back (3x3x3 convolution, trilinear resampling to ``x``'s exact
    grid, so odd sizes work, and a last plain 1x1x1 convolution whose output is compared with ``x``
    by the reconstruction loss; a 3x3x3 one there, on the full grid, was most of the module's cost). Every other convolution is followed by ``norm`` and ``act`` (the
    seed's autoencoder had no activation between its convolutions).

    Args:
        feature_channels: channels ``C_f`` of the scale's features ``F_s``.
        multiscale_channels: channels ``C_ms`` of the fused multi-scale features ``F_ms``.
        latent_channels: width of the latent code; default ``C_f + C_ms``.
        attention_downsample: pooling factor of the grid on which PAM attends (1 = full grid).
        norm: MONAI norm of the encoder, decoder and attention map convolutions.
        act: MONAI activation of the same.
    """

    def __init__(
        self,
        feature_channels: int,
        multiscale_channels: int,
        latent_channels: int | None = None,
        attention_downsample: int = 1,
        norm: str | tuple = ("instance", {"affine": True}),
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        channels = feature_channels + multiscale_channels
        latent_channels = latent_channels or channels
        conv = lambda cin, cout, **kw: Convolution(3, cin, cout, kernel_size=3, norm=norm, act=act, **kw)
        self.position_attention = PositionAttention(channels, downsample=attention_downsample)
        self.channel_attention = ChannelAttention()
        self.encoder = nn.Sequential(conv(channels, channels, strides=2), conv(channels, latent_channels))
        self.decoder_in = conv(latent_channels, channels)
        self.decoder_out = Convolution(3, channels, channels, kernel_size=1, conv_only=True)
        self.attention_map = Convolution(3, channels, multiscale_channels, kernel_size=1, norm=norm, act=act)

    def decode(self, latent: torch.Tensor, grid: torch.Size) -> torch.Tensor:
        """The latent code back to ``(B, C_f + C_ms, *grid)``."""
        upsampled = F.interpolate(self.decoder_in(latent), size=grid, mode="trilinear", align_corners=False)
        return self.decoder_out(upsampled)

    def forward(self, features: torch.Tensor, multiscale: torch.Tensor) -> GuidedAttentionOutput:
        """``features``: ``(B, C_f, D, H, W)``; ``multiscale``: ``(B, C_ms, D, H, W)``."""
        x = torch.cat([features, multiscale], dim=1)
        attended = self.position_attention(x) + self.channel_attention(x)
        latent = self.encoder(x)
        reconstruction = self.decode(latent, x.shape[2:])
        output = self.attention_map(reconstruction * attended) * multiscale
        return GuidedAttentionOutput(output, reconstruction, latent)
