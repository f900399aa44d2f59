"""Python the ``msga_net`` bundle's configs need beyond MONAI; the network lives in ``common``."""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parent.parent)
