"""TorchScript and ONNX exports of a bundle's trained network, each checked against the eager one by MONAI's converters."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.bundle import ckpt_export, onnx_export

from common.bundle import bundle_folder, load_network
from common.workflow.checkpoints import model_state
from common.errors import InputError
from common.io import write_atomically
from common.cli.onnx_network import record_weights_digest, state_digest

EXPORTS = {"torchscript": ".ts", "onnx": ".onnx"}


def mismatch(err: AssertionError) -> str:
    """The greatest difference reported by ``torch.testing.assert_close``, or its first line."""
    lines = str(err).splitlines()
    return next((line.strip() for line in lines if line.strip().startswith("Greatest absolute difference")), lines[0] if lines else "")


def export(
    bundle: str,
    formats: str | tuple[str, ...] = ("torchscript", "onnx"),
    checkpoint: str | None = None,
    output_dir: str | None = None,
    tolerance: float = 1e-4,
) -> list[str]:
    """Export ``models/model.pt`` of ``bundle`` to ``model.ts`` (``monai.bundle ckpt_export``) and
    ``model.onnx`` (``monai.bundle onnx_export``) beside it, both traced at the bundle's
    ``roi_size`` (the shape the sliding-window inferer feeds; ONNX through PyTorch's
    ``torch.export``-based exporter, as the TorchScript-based one crashes on ``MTUNet``'s graph),
    and return their paths. The network is built with the sizes the weights recorded. Each export
    is checked against the eager network on a random input by MONAI's own converter (``verify``;
    ONNX through ONNX Runtime); one off by more than ``tolerance`` is removed and reported as an error.

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
    _, input_shape = load_network(folder, weights)
    configs = folder / "configs"
    common_args = {
        "net_id": "network_def", "ckpt_file": str(weights), "meta_file": str(configs / "metadata.json"),
        "config_file": str(configs / "inference.json"), "key_in_ckpt": "model", "use_trace": True,
        "input_shape": input_shape, "ckpt_path": str(weights.resolve()),
    }
    verify = {"verify": True, "device": torch.device("cpu"), "rtol": 0.0, "atol": tolerance}
    written = []
    for kind in kinds:
        final = Path(output_dir or weights.parent) / f"model{EXPORTS[kind]}"

        def write(path: Path) -> None:
            try:
                if kind == "torchscript":
                    ckpt_export(filepath=str(path), converter_kwargs=verify, **common_args)
                else:
                    onnx_export(filepath=str(path), converter_kwargs={**verify, "use_ort": True, "dynamo": True, "opset_version": 18},
                                **common_args)
                    record_weights_digest(path, state_digest(model_state(weights)))
            except AssertionError as err:
                raise InputError(f"{final}: {kind} export differs from the eager network by more than {tolerance:g} ({mismatch(err)})") from err

        write_atomically(final, write)
        written.append(str(final))
    return written
