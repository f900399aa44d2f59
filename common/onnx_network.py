"""A bundle's exported ``model.onnx`` under ONNX Runtime, as a torch module that the bundles'
sliding-window inferer and checkpoint loader use like the eager network."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

WEIGHTS_DIGEST_KEY = "state_dict_sha256"  # metadata entry of model.onnx: the weights it was exported from


def state_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict's names, shapes, dtypes and values: the same weights, the same digest."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def record_weights_digest(onnx_path: Path, digest: str) -> None:
    """Write ``digest`` into the metadata of the ONNX file at ``onnx_path`` (in place)."""
    import onnx

    model = onnx.load(str(onnx_path))
    entry = model.metadata_props.add()
    entry.key, entry.value = WEIGHTS_DIGEST_KEY, digest
    onnx.save(model, str(onnx_path))


class OnnxNetwork(torch.nn.Module):
    """``model.onnx`` run by ONNX Runtime on the CPU, one window at a time (it was exported for a
    batch of one), outputs ``(B, num_classes, *roi_size)`` as a tensor on the input's device.

    It holds no weights: ``load_state_dict`` checks that the weights given are those the file was
    exported from (:data:`WEIGHTS_DIGEST_KEY`) and raises ``RuntimeError`` otherwise, so the
    bundles' strict checkpoint loading refuses an ONNX file that does not match ``model.pt``.

    Args:
        path: the ONNX file (``python -m common export``).
        threads: ONNX Runtime's intra-op threads (``None``: its default, one per core).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.weights_digest = self.session.get_modelmeta().custom_metadata_map.get(WEIGHTS_DIGEST_KEY)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = torch.as_tensor(x).detach().cpu().float().numpy()
        outputs = [self.session.run(None, {self.input_name: windows[i:i + 1]})[0] for i in range(len(windows))]
        return torch.from_numpy(np.concatenate(outputs)).to(x.device)

    def exported_from(self, state: Mapping[str, Any]) -> bool:
        """Whether ``state`` (a ``model.pt``'s ``model`` entry) is what this file was exported from."""
        return self.weights_digest is not None and self.weights_digest == state_digest(state)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> None:
        """Check, not load: ``RuntimeError`` unless ``state_dict`` is what the file was exported from."""
        if not self.exported_from(state_dict):
            raise RuntimeError(f"{self.path} was not exported from these weights (export them again: python -m common export)")
