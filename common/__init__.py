"""Code shared by the attention-segmentation bundles: layers, networks, transforms, data, I/O.

Bundle configs ``$import common`` and reach the submodules below as attributes.
"""

from common import checkpoints, data, errors, handlers, io, losses, report, transforms, workflow

__all__ = ["checkpoints", "data", "errors", "handlers", "io", "losses", "report", "transforms", "workflow"]
