"""UNETR (Hatamizadeh et al., WACV 2022) with a fused-attention ViT encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.utils import ensure_tuple_rep
from torch import nn

from common.layers import ViTEncoder

PATCH_SIZE = 16  # the decoder upsamples four times by 2 from the token grid back to the input grid
NUM_LAYERS = 12
SKIP_LAYERS = (3, 6, 9)  # indices into the per-block hidden states, as in MONAI's UNETR


class UNETR(nn.Module):
    """UNETR: ViT encoder on 16^3 patches, skips from blocks 3/6/9 and the last, conv decoder.

    Same constructor, module names and parameter shapes as :class:`monai.networks.nets.UNETR`, so a
    MONAI UNETR checkpoint loads strictly and gives the same output; the self-attention runs through
    ``scaled_dot_product_attention`` instead of an explicit attention matrix.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        img_size: ROI size, each dimension divisible by 16.
        feature_size: channels of the finest decoder level.
        hidden_size: ViT token channels.
        mlp_dim: ViT MLP width.
        num_heads: ViT attention heads.
        proj_type: patch embedding, ``"conv"`` or ``"perceptron"``.
        norm_name: decoder normalisation, e.g. ``"instance"`` or ``"batch"``.
        conv_block: whether the skip projections use conv blocks.
        res_block: whether decoder conv blocks are residual.
        dropout_rate: dropout in the ViT.
        spatial_dims: 2 or 3.
        qkv_bias: whether the query/key/value projection has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: Sequence[int] | int,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        proj_type: str = "conv",
        norm_name: tuple | str = "instance",
        conv_block: bool = True,
        res_block: bool = True,
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        img_size = ensure_tuple_rep(img_size, spatial_dims)
        if any(s % PATCH_SIZE for s in img_size):
            raise ValueError(f"UNETR needs every dimension of img_size divisible by {PATCH_SIZE}, got {img_size}.")
        self.feat_size = tuple(s // PATCH_SIZE for s in img_size)
        self.hidden_size = hidden_size
        self.vit = ViTEncoder(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=PATCH_SIZE,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=NUM_LAYERS,
            num_heads=num_heads,
            proj_type=proj_type,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
            qkv_bias=qkv_bias,
        )
        common = {"spatial_dims": spatial_dims, "kernel_size": 3, "norm_name": norm_name, "res_block": res_block}
        self.encoder1 = UnetrBasicBlock(in_channels=in_channels, out_channels=feature_size, stride=1, **common)
        self.encoder2, self.encoder3, self.encoder4 = (
            UnetrPrUpBlock(
                in_channels=hidden_size,
                out_channels=feature_size * factor,
                num_layer=num_layer,
                stride=1,
                upsample_kernel_size=2,
                conv_block=conv_block,
                **common,
            )
            for factor, num_layer in ((2, 2), (4, 1), (8, 0))
        )
        self.decoder5 = UnetrUpBlock(
            in_channels=hidden_size, out_channels=feature_size * 8, upsample_kernel_size=2, **common
        )
        self.decoder4, self.decoder3, self.decoder2 = (
            UnetrUpBlock(
                in_channels=feature_size * factor, out_channels=feature_size * factor // 2, upsample_kernel_size=2,
                **common,
            )
            for factor in (8, 4, 2)
        )
        self.out = UnetOutBlock(spatial_dims=spatial_dims, in_channels=feature_size, out_channels=out_channels)

    def tokens_to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, hidden)`` tokens to a ``(B, hidden, *feat_size)`` feature map."""
        grid = tokens.transpose(1, 2)
        return grid.reshape(tokens.shape[0], self.hidden_size, *self.feat_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, *img_size)``; returns logits ``(B, out_channels, *img_size)``."""
        last, hidden_states = self.vit(x)
        enc1 = self.encoder1(x)
        enc2, enc3, enc4 = (
            encoder(self.tokens_to_grid(hidden_states[layer]))
            for encoder, layer in zip((self.encoder2, self.encoder3, self.encoder4), SKIP_LAYERS)
        )
        dec = self.decoder5(self.tokens_to_grid(last), enc4)
        dec = self.decoder4(dec, enc3)
        dec = self.decoder3(dec, enc2)
        return self.out(self.decoder2(dec, enc1))
