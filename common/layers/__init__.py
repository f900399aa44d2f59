"""Attention layers shared by the bundles; one block a module.

Every layer here and every network in ``common.networks`` is 3D: feature maps are
``(B, C, D, H, W)``, any grid size unless a docstring says otherwise. Only ``UNETR`` and
``ViTEncoder`` take MONAI's ``spatial_dims``, because they keep the signature (and load the
weights) of MONAI's ``UNETR``.
"""

from common.layers.attention_gate import AttentionGate
from common.layers.danet_attention import ChannelAttention, PositionAttention
from common.layers.external_attention import ExternalAttention
from common.layers.gaussian_axial_attention import GaussianAxialAttention
from common.layers.global_aggregation import GlobalAggregationBlock
from common.layers.guided_attention import GuidedAttentionModule, GuidedAttentionOutput
from common.layers.lgg_attention import LocalGlobalGaussianAttention
from common.layers.pyramid_attention import AsymmetricFusionBlock, AsymmetricPyramidBlock, PyramidPoolingSampler
from common.layers.self_attention import MultiHeadSelfAttention
from common.layers.tokens import from_tokens, fused_attention, to_tokens
from common.layers.transformer_block import TransformerBlock
from common.layers.vit_encoder import ViTEncoder
from common.layers.window_aggregation import DynamicWindowAggregation
from common.layers.window_attention import WindowAttention
from common.layers.windows import from_windows, to_windows

__all__ = [
    "AsymmetricFusionBlock",
    "AsymmetricPyramidBlock",
    "AttentionGate",
    "ChannelAttention",
    "DynamicWindowAggregation",
    "ExternalAttention",
    "GaussianAxialAttention",
    "GlobalAggregationBlock",
    "GuidedAttentionModule",
    "GuidedAttentionOutput",
    "LocalGlobalGaussianAttention",
    "MultiHeadSelfAttention",
    "PositionAttention",
    "PyramidPoolingSampler",
    "TransformerBlock",
    "ViTEncoder",
    "WindowAttention",
    "from_tokens",
    "from_windows",
    "fused_attention",
    "to_tokens",
    "to_windows",
]
