"""Code shared by the attention-segmentation bundles: layers, networks, transforms, data, I/O.

Bundle configs ``$import common`` and reach the submodules below as attributes.
"""

from common import augmentation, checkpoints, data, errors, handlers, inversion, io, losses, report, transforms, workflow

__all__ = ["augmentation", "checkpoints", "data", "errors", "handlers", "inversion", "io", "losses", "report", "transforms", "workflow"]
