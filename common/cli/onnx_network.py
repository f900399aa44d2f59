"""A bundle's exported ``model.onnx`` under ONNX Runtime, as a torch module that the bundles'
sliding-window inferer and checkpoint loader use like the eager network."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)
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


class FasterBackend(torch.nn.Module):
    """The eager network and its ONNX Runtime export of the same weights, raced on the first
    windows; the faster of the two per window runs the rest.

    The first four windows go one at a time to eager, ONNX Runtime (each warming up), eager and
    ONNX Runtime again (each timed); every window is computed once, so the race costs nothing but
    batching those four. A scan of fewer windows never decides and loses nothing. Both give the same
    outputs to 1e-4 (``python -m common export`` checks it), so mixing them within a scan does not
    change the labels.

    Args:
        eager: the bundle's network, on the CPU.
        exported: :class:`OnnxNetwork` exported from the weights that ``eager`` will load.
    """

    RACED_WINDOWS = 4

    def __init__(self, eager: torch.nn.Module, exported: OnnxNetwork) -> None:
        super().__init__()
        self.eager = eager
        self.exported = exported
        self.raced = 0
        self.winner: torch.nn.Module | None = None
        self.window_ms: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, *roi_size)`` -> ``(B, num_classes, *roi_size)``."""
        outputs = []
        for first in range(len(x)):
            if self.winner is not None:
                outputs.append(self.winner(x[first:]))
                break
            outputs.append(self._race(x[first:first + 1]))
        return torch.cat(outputs)

    def _race(self, window: torch.Tensor) -> torch.Tensor:
        """Run the race's next window ``(1, C, *roi_size)``; decide after the last."""
        name, network = ("pytorch", self.eager) if self.raced % 2 == 0 else ("onnxruntime", self.exported)
        started = time.perf_counter()
        output = network(window)
        if self.raced >= 2:
            self.window_ms[name] = 1000 * (time.perf_counter() - started)
        self.raced += 1
        if self.raced == self.RACED_WINDOWS:
            faster = self.window_ms["onnxruntime"] < self.window_ms["pytorch"]
            self.winner = self.exported if faster else self.eager
            logger.info(f"per window: PyTorch {self.window_ms['pytorch']:.0f} ms, ONNX Runtime {self.window_ms['onnxruntime']:.0f} ms; "
                        f"{'ONNX Runtime' if faster else 'PyTorch'} runs the rest")
        return output

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load ``state_dict`` into the eager network (strictly unless told) and check that the
        export was made from it (``RuntimeError`` otherwise)."""
        result = self.eager.load_state_dict(state_dict, strict=strict, assign=assign)
        self.exported.load_state_dict(state_dict)
        return result
