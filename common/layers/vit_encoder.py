"""ViT encoder on non-overlapping 3D (or 2D) patches, returning every block's hidden state."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import PatchEmbeddingBlock
from torch import nn

from common.layers.transformer_block import TransformerBlock


class ViTEncoder(nn.Module):
    """Patch embedding with learned positions, ``num_layers`` transformer blocks, final LayerNorm.

    No class token. Parameter names match :class:`monai.networks.nets.ViT` with
    ``classification=False`` (``patch_embedding``, ``blocks``, ``norm``).

    Args:
        in_channels: input channels.
        img_size: spatial size of the input, divisible by ``patch_size``.
        patch_size: spatial size of a patch.
        hidden_size: token channels.
        mlp_dim: MLP width in each block.
        num_layers: number of transformer blocks.
        num_heads: attention heads.
        proj_type: patch embedding, ``"conv"`` or ``"perceptron"``.
        dropout_rate: dropout in embedding, attention and MLP.
        spatial_dims: 2 or 3.
        qkv_bias: whether the query/key/value projection has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int] | int,
        patch_size: Sequence[int] | int,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        proj_type: str = "conv",
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type=proj_type,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x``: ``(B, C_in, *img_size)``. Returns the normed last state ``(B, N, hidden)`` and the
        un-normed state after each block (``num_layers`` tensors of ``(B, N, hidden)``)."""
        x = self.patch_embedding(x)
        hidden_states = []
        for block in self.blocks:
            x = block(x)
            hidden_states.append(x)
        return self.norm(x), hidden_states
