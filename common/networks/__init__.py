"""Networks of the bundles, composed from ``common.layers`` and MONAI blocks."""

from common.networks.unetr import UNETR

__all__ = ["UNETR"]
