"""A bundle's inference set up once for a run of many scans: the configs parsed, the network built and
its weights loaded (strictly, checked against what they record), ONNX Runtime when asked, then each
scan read, pre-processed and segmented by the bundle's own ``inference.json`` evaluator."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.data import ITKReader
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.transforms import Compose

from common.bundle import bundle_workflow
from common.cli.onnx_network import FasterBackend, OnnxNetwork
from common.cli.scan import Scan
from common.errors import InputError, first_line
from common.io import file_sha256
from common.transforms.geometry import check_geometry
from common.workflow.checkpoints import StrictCheckpointLoader, model_state

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "onnx")


def choose_device(device: str | None) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``), or CUDA when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise InputError(f"--device {device}: not a device ({first_line(err)})") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device on this machine; use --device cpu")
    return chosen


def onnx_network(backend: str, device: torch.device, weights: Path, staged_weights: Path) -> OnnxNetwork | None:
    """The network ONNX Runtime runs for ``--backend`` (``None``: eager PyTorch only). ``auto`` takes
    ``model.onnx`` beside ``weights`` when the device is the CPU, ONNX Runtime is installed and the
    file was exported from exactly these weights, and says why not otherwise; ``onnx`` insists. The
    file is copied beside the staged weights and run from there."""
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: choose from {list(BACKENDS)}")
    if backend == "torch":
        return None
    exported = weights.with_name("model.onnx")
    if device.type != "cpu":
        problem = f"ONNX Runtime runs here on the CPU only, the device is {device}"
    elif not exported.is_file():
        problem = f"{exported}: not found (python -m common export --checkpoint {weights} writes it)"
    elif importlib.util.find_spec("onnxruntime") is None:
        problem = "onnxruntime is not installed"
    else:
        network = OnnxNetwork(shutil.copyfile(exported, staged_weights.with_name("model.onnx")))
        if network.exported_from(model_state(staged_weights)):
            return network
        problem = f"{exported}: not exported from {weights} (export them again)"
    if backend == "onnx":
        raise InputError(f"--backend onnx: {problem}")
    logger.info(f"eager PyTorch: {problem}")
    return None


def backend_settings(backend: str, exported: OnnxNetwork | None) -> dict[str, Any]:
    """Config keys that put ``exported`` in the network's place: alone for ``--backend onnx``,
    raced against the eager network (:class:`FasterBackend`) for ``auto``."""
    if exported is None:
        return {}
    if backend == "onnx":
        return {"network": exported}
    return {"onnx_network": exported, "network": "$common.cli.onnx_network.FasterBackend(@network_def.to(@device), @onnx_network)"}


def backend_description(network: torch.nn.Module) -> str:
    """What ran the windows, for the report: ``pytorch``, or ONNX Runtime with the export's file
    name and checksum, and for a race, the winner and both times per window."""
    if not isinstance(network, FasterBackend):
        return f"onnxruntime ({network.path.name}, sha256 {file_sha256(network.path)})" if isinstance(network, OnnxNetwork) else "pytorch"
    if network.winner is None:
        return f"pytorch and onnxruntime, raced on fewer than {network.RACED_WINDOWS} windows: undecided"
    timed = ", ".join(f"{name} {ms:.0f} ms" for name, ms in network.window_ms.items())
    return f"{backend_description(network.winner)}, the faster per window ({timed})"


class NextScan(torch.utils.data.Dataset):
    """The evaluator's data set: the one pre-processed scan it segments next."""

    def __init__(self) -> None:
        self.item: dict[Hashable, Any] | None = None

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[Hashable, Any]:
        return self.item


@dataclass
class Inference:
    """The parsed ``inference.json`` of one device, its network loaded: what segments each scan."""

    workflow: ConfigWorkflow
    evaluator: SupervisedEvaluator
    preprocessing: Compose
    next_scan: NextScan
    device: torch.device

    def setting(self, key: str) -> Any:
        return self.workflow.parser.get_parsed_content(key)


class Segmenter:
    """A bundle's ``inference.json`` with ``weights``, set up once and run on scan after scan.

    The weights are first copied into ``workspace`` and hashed there (the report's checksum is that
    of the bytes used); the network is built with the settings they record and loaded strictly once;
    each scan's label volume is written to ``workspace/segmentation``. A GPU that runs out of memory
    on a scan segments it on the CPU (set up on first need).

    Args:
        folder: the bundle folder.
        weights: the checkpoint.
        device: where the network runs.
        overrides: config keys to change (refused where they contradict the weights).
        backend: ``torch``, ``onnx`` or ``auto`` (:func:`onnx_network`).
        workspace: a private folder for the staged weights and the label volumes.
    """

    def __init__(self, folder: Path, weights: Path, device: torch.device, overrides: dict[str, Any], backend: str, workspace: Path) -> None:
        self.folder, self.device = folder, device
        (workspace / "weights").mkdir()
        self.weights = Path(shutil.copyfile(weights, workspace / "weights" / weights.name))
        self.weights_sha256 = file_sha256(self.weights)
        self.output_dir = workspace / "segmentation"
        self.output_dir.mkdir()
        self.overrides = {**overrides, **backend_settings(backend, onnx_network(backend, device, weights, self.weights))}
        self.windows_seconds = 0.0  # the last scan's sliding window, the network's own time
        self._inference = {device.type: self._set_up(device)}

    def _set_up(self, device: torch.device) -> Inference:
        """Parse ``inference.json`` for ``device`` and load the weights into its network, once.
        Paths reach the config as ``Path`` objects, which MONAI never parses: a file name is never
        read as an expression (``$``), a reference (``@``), a macro (``%``) or a key path (``#``)."""
        next_scan = NextScan()
        settings = {**self.overrides, "device": device, "output_dir": self.output_dir.absolute(), "num_workers": 0,
                    "dataset": next_scan, "inferer#progress": True, "ckpt_path": self.weights.absolute(), "reader": ITKReader()}
        workflow = bundle_workflow(self.folder, "inference.json", "infer", settings)
        workflow.initialize()
        parsed = workflow.parser.get_parsed_content
        evaluator = parsed("evaluator")
        for loader in [h for h in parsed("handlers") if isinstance(h, StrictCheckpointLoader)]:
            loader(evaluator)
            evaluator.remove_event_handler(loader, Events.STARTED)
        evaluator.add_event_handler(Events.ITERATION_STARTED, lambda _: setattr(self, "_windows_started", time.perf_counter()))
        evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED,
                                    lambda _: setattr(self, "windows_seconds", time.perf_counter() - self._windows_started))
        return Inference(workflow, evaluator, parsed("preprocessing"), next_scan, device)

    @property
    def inference(self) -> Inference:
        return self._inference[self.device.type]

    def preprocess(self, scan: Scan) -> dict[Hashable, Any]:
        """``scan`` (a staged copy) read and pre-processed as ``inference.json`` does, its grid
        first checked from its headers against the bundle's limits."""
        parsed = self.inference.setting
        if scan.geometry is not None:
            check_geometry(scan.path, scan.geometry, parsed("max_voxels"), parsed("spacing"), parsed("max_resampled_voxels"))
        return self.inference.preprocessing({"image": scan.source.absolute()})

    def segment(self, item: dict[Hashable, Any]) -> tuple[Path, torch.device]:
        """Segment a pre-processed scan; return its label volume (in ``output_dir``) and the device
        that ran, the CPU when the GPU ran out of memory."""
        try:
            return self._run(self.inference, item), self.device
        except torch.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            logger.warning(f"{self.device} ran out of memory; segmenting this scan on the CPU instead")
            torch.cuda.empty_cache()
            for leftover in self.output_dir.glob("*.nii.gz"):
                leftover.unlink()
            cpu = torch.device("cpu")
            if "cpu" not in self._inference:
                self._inference["cpu"] = self._set_up(cpu)
            return self._run(self._inference["cpu"], item), cpu

    def _run(self, inference: Inference, item: dict[Hashable, Any]) -> Path:
        inference.next_scan.item = item
        inference.evaluator.run()
        written = sorted(self.output_dir.glob("*.nii.gz"))
        if len(written) != 1:
            raise RuntimeError(f"{self.output_dir}: expected one segmentation from the bundle, found {[p.name for p in written]}")
        return written[0]

    @property
    def class_names(self) -> list[str]:
        return list(self.inference.setting("class_names"))

    @property
    def network(self) -> torch.nn.Module:
        return self.inference.setting("network")

    def close(self) -> None:
        for inference in self._inference.values():
            inference.workflow.finalize()
