"""The bundle's network, composed from ``common.layers`` and MONAI blocks."""

from common.networks import ANNNet

__all__ = ["ANNNet"]
