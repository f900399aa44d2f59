"""The bundle's network: UNETR with fused attention, state-dict compatible with MONAI's UNETR."""

from common.networks import UNETR

__all__ = ["UNETR"]
