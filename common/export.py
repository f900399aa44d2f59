"""TorchScript and ONNX exports of a bundle's trained network, each checked against the eager one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.bundle import ckpt_export, onnx_export

from common.bundle import bundle_folder, load_network
from common.checkpoints import model_state
from common.errors import InputError
from common.io import write_atomically
from common.onnx_network import record_weights_digest, state_digest

EXPORTS = {"torchscript": ".ts", "onnx": ".onnx"}


def run_exported(kind: str, path: Path, image: torch.Tensor) -> np.ndarray:
    """Output of the exported network at ``path`` on ``image``."""
    if kind == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(image).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]


def export(
    bundle: str,
    formats: str | tuple[str, ...] = ("torchscript", "onnx"),
    checkpoint: str | None = None,
    output_dir: str | None = None,
    tolerance: float = 1e-4,
) -> dict[str, float]:
    """Export ``models/model.pt`` of ``bundle`` to ``model.ts`` (``monai.bundle ckpt_export``) and
    ``model.onnx`` (``monai.bundle onnx_export``) beside it, both traced at the bundle's
    ``roi_size`` (the shape the sliding-window inferer feeds; ONNX through PyTorch's
    ``torch.export``-based exporter, as the TorchScript-based one crashes on ``MTUNet``'s graph),
    and return the largest absolute difference of each from the eager network on one random input.
    The network is built with the sizes the weights recorded.
    An export off by more than ``tolerance`` (or NaN) is removed and reported as an error.

    Args:
        bundle: the bundle folder, e.g. ``bundles/unetr``.
        formats: ``torchscript``, ``onnx`` or both (comma-separated on the command line).
        checkpoint: weights to export instead of the bundle's ``models/model.pt``.
        output_dir: folder of the exports; default: the folder of the weights.
        tolerance: largest accepted absolute difference from the eager network.
    """
    folder = bundle_folder(bundle)
    weights = Path(checkpoint) if checkpoint else folder / "models" / "model.pt"
    if not weights.is_file():
        raise InputError(f"{weights}: no trained weights to export; train the bundle first")
    kinds = formats.split(",") if isinstance(formats, str) else list(formats)
    unknown = sorted(set(kinds) - set(EXPORTS))
    if unknown:
        raise InputError(f"--formats: unknown {unknown}; choose from {sorted(EXPORTS)}")
    network, input_shape = load_network(folder, weights)
    image = torch.rand(input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = network(image).numpy()
    configs = folder / "configs"
    common_args = {
        "net_id": "network_def", "ckpt_file": str(weights), "meta_file": str(configs / "metadata.json"),
        "config_file": str(configs / "inference.json"), "key_in_ckpt": "model", "use_trace": True,
        "input_shape": input_shape, "ckpt_path": str(weights.resolve()),
    }
    differences = {}
    for kind in kinds:
        final = Path(output_dir or weights.parent) / f"model{EXPORTS[kind]}"

        def write(path: Path) -> None:
            if kind == "torchscript":
                ckpt_export(filepath=str(path), **common_args)
            else:
                onnx_export(filepath=str(path), converter_kwargs={"dynamo": True, "opset_version": 18}, **common_args)
                record_weights_digest(path, state_digest(model_state(weights)))
            differences[kind] = float(np.abs(run_exported(kind, path, image) - expected).max())
            if not differences[kind] <= tolerance:  # NaN fails too
                raise InputError(f"{final}: {kind} export differs from the eager network by {differences[kind]:.2e} (> {tolerance:g})")

        write_atomically(final, write)
    return differences
