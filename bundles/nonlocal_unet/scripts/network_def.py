"""The bundle's network, composed from ``common.layers`` and MONAI blocks."""

from common.networks import NonLocalUNet

__all__ = ["NonLocalUNet"]
