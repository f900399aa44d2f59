"""Attention layers shared by the bundles; one block a module."""

from common.layers.self_attention import MultiHeadSelfAttention
from common.layers.transformer_block import TransformerBlock
from common.layers.vit_encoder import ViTEncoder

__all__ = ["MultiHeadSelfAttention", "TransformerBlock", "ViTEncoder"]
