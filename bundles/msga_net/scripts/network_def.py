"""The bundle's network, composed from ``common.layers`` and MONAI blocks."""

from common.networks import MSGANet

__all__ = ["MSGANet"]
