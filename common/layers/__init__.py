"""Attention layers shared by the bundles; one block a module."""

from common.layers.attention_gate import AttentionGate
from common.layers.danet_attention import ChannelAttention, PositionAttention
from common.layers.external_attention import ExternalAttention
from common.layers.gaussian_axial_attention import GaussianAxialAttention
from common.layers.global_aggregation import GlobalAggregationBlock
from common.layers.pyramid_attention import AsymmetricFusionBlock, AsymmetricPyramidBlock, PyramidPoolingSampler
from common.layers.self_attention import MultiHeadSelfAttention
from common.layers.tokens import from_tokens, fused_attention, to_tokens
from common.layers.transformer_block import TransformerBlock
from common.layers.vit_encoder import ViTEncoder

__all__ = [
    "AsymmetricFusionBlock",
    "AsymmetricPyramidBlock",
    "AttentionGate",
    "ChannelAttention",
    "ExternalAttention",
    "GaussianAxialAttention",
    "GlobalAggregationBlock",
    "MultiHeadSelfAttention",
    "PositionAttention",
    "PyramidPoolingSampler",
    "TransformerBlock",
    "ViTEncoder",
    "from_tokens",
    "fused_attention",
    "to_tokens",
]
