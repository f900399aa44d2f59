"""The commands of ``python -m common`` (segment, plan, package, verify, unpack, export,
prepare_data) and the I/O they need: scans, DICOM SEG, DICOMweb, overlays, ONNX Runtime."""

from common.surface import lazy_getattr

__getattr__ = lazy_getattr(__name__)
