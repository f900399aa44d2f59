"""A NIfTI reader whose peak memory is the image, not twice the image."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
from monai.data import NibabelReader
from nibabel.volumeutils import apply_read_scaling

READ_CHUNK_BYTES = 2**24


class StreamingNibabelReader(NibabelReader):
    """:class:`monai.data.NibabelReader` that decompresses a ``.nii.gz`` straight into a C-ordered
    array, ``READ_CHUNK_BYTES`` at a time. nibabel reads the whole decompressed stream into one bytes
    object and copies it into an F-ordered array, which MONAI then copies into C order: a 0.5 mm
    brain (260 MB of float32) would peak at two to three times its size while it is read.
    Uncompressed files (memory-mapped by nibabel) and anything but a plain voxel array are read as
    ``NibabelReader`` reads them. Same arguments as ``NibabelReader``.
    """

    def _get_array_data(self, img: Any, filename: Any) -> np.ndarray:
        proxy = img.dataobj
        if self.to_gpu or not str(filename).endswith(".gz") or getattr(proxy, "order", None) != "F" or len(proxy.shape) < 2:
            return super()._get_array_data(img, filename)
        shape, dtype = tuple(proxy.shape), np.dtype(proxy.dtype)
        array = np.empty(shape, dtype=dtype)
        layer_bytes = int(np.prod(shape[:-1])) * dtype.itemsize  # one index of the last, slowest axis
        layers_per_read = max(1, READ_CHUNK_BYTES // layer_bytes)
        with gzip.open(filename, "rb") as stream:
            stream.seek(proxy.offset)
            for start in range(0, shape[-1], layers_per_read):
                stop = min(start + layers_per_read, shape[-1])
                raw = stream.read(layer_bytes * (stop - start))
                if len(raw) != layer_bytes * (stop - start):
                    raise OSError(f"{filename}: the file ends before its {array.nbytes} bytes of voxels")
                array[..., start:stop] = np.frombuffer(raw, dtype).reshape(*shape[:-1], stop - start, order="F")
        return apply_read_scaling(array, proxy.slope, proxy.inter)
