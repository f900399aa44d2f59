"""The bundle's network, composed from ``common.layers`` and MONAI blocks."""

from common.networks import MTUNet

__all__ = ["MTUNet"]
