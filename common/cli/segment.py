"""The clinician's command: one scan, one bundle, a label volume on the scan's grid, an overlay
picture and a report, all or nothing."""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from common.bundle import bundle_folder, bundle_workflow, read_metadata, read_overrides
from common.workflow.checkpoints import model_state
from common.cli.dicom_seg import seg_source_problem, write_dicom_seg
from common.cli.dicomweb import checked_url, is_dicomweb, pull_series, store
from common.errors import InputError, brief_message, find_input_error, first_line
from common.transforms.geometry import check_geometry
from common.io import file_sha256, write_json
from common.transforms.nifti_reader import StreamingNibabelReader
from common.cli.onnx_network import FasterBackend, OnnxNetwork
from common.cli.overlay import save_overlay
from common.cli.verify import MANIFEST
from common.cli.scan import Scan, find_scan

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


def class_volumes_ml(label: MetaTensor, names: list[str]) -> dict[str, float]:
    """Volume in mL of every foreground class of ``label`` ``(1, D, H, W)``, from its affine."""
    voxel_ml = abs(float(np.linalg.det(label.affine[:3, :3].double().numpy()))) / 1000.0
    counts = torch.bincount(torch.as_tensor(label).flatten(), minlength=len(names))
    return {name: round(float(counts[i]) * voxel_ml, 3) for i, name in enumerate(names) if i > 0}


def open_output_folder(output: Path) -> tuple[Path, bool]:
    """A fresh hidden staging folder inside ``output`` (created if needed), and whether ``output``
    was created here. :class:`InputError` when ``output`` cannot be written."""
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".segment-", dir=output)), created
    except OSError as err:
        raise InputError(f"{output}: cannot write the outputs there ({err.strerror or first_line(err)})") from err


def run_inference(folder: Path, scan: Scan, staging: Path, device: torch.device, weights: Path,
                  overrides: dict) -> tuple[Path, list[str], torch.nn.Module]:
    """Run the bundle's ``inference.json`` with ``weights`` on ``scan``; return the label volume
    written in ``staging``, the class names of its labels (those the weights were trained with) and
    the network that ran.
    Paths reach the config as ``Path`` objects, which MONAI never parses: a file name is never read
    as an expression (``$``), a reference (``@``), a macro (``%``) or a key path (``#``)."""
    settings = {
        **overrides,
        "device": device,
        "output_dir": staging.absolute(),
        "num_workers": 0,
        "dataset#data": [{"image": scan.source.absolute()}],
        "inferer#progress": True,
        "ckpt_path": weights.absolute(),
    }
    if scan.series_uid is not None:
        settings["reader"] = scan.reader()
    workflow = bundle_workflow(folder, "inference.json", "infer", settings)
    workflow.initialize()
    parsed = workflow.parser.get_parsed_content
    if scan.geometry is not None:
        check_geometry(scan.path, scan.geometry, parsed("max_voxels"), parsed("spacing"), parsed("max_resampled_voxels"))
    workflow.run()
    workflow.finalize()
    written = sorted(staging.glob("*.nii.gz"))
    if len(written) != 1:
        raise RuntimeError(f"{staging}: expected one segmentation from the bundle, found {[p.name for p in written]}")
    return written[0], list(parsed("class_names")), parsed("network")


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


def run_with_cpu_fallback(folder: Path, scan: Scan, staging: Path, device: torch.device, weights: Path,
                          overrides: dict) -> tuple[Path, list[str], torch.nn.Module, torch.device]:
    """:func:`run_inference`; when a GPU runs out of memory, once more on the CPU."""
    try:
        return *run_inference(folder, scan, staging, device, weights, overrides), device
    except torch.OutOfMemoryError:
        if device.type != "cuda":
            raise
        logger.warning(f"{device} ran out of memory on {scan.path}; segmenting on the CPU instead")
        torch.cuda.empty_cache()
        for leftover in staging.glob("*.nii.gz"):
            leftover.unlink()
        cpu = torch.device("cpu")
        return *run_inference(folder, scan, staging, cpu, weights, overrides), cpu


@contextmanager
def errors_naming(originals: dict[Path, str]) -> Iterator[None]:
    """Bad-input errors raised on the staged copies (wrapped by MONAI or not) name what the user gave instead."""
    try:
        yield
    except Exception as err:
        input_error = find_input_error(err)
        if input_error is None:
            raise
        message = brief_message(input_error)
        for copy, original in originals.items():
            message = message.replace(str(copy.absolute()), original)
        raise InputError(message) from err


def bundle_facts(folder: Path, metadata: dict[str, Any], weights: Path, weights_sha256: str) -> dict[str, Any]:
    """Name, version, intended use and checksums of the bundle that made the segmentation."""
    manifest = folder / MANIFEST
    return {
        "name": metadata["name"],
        "version": metadata["version"],
        "folder": str(folder),
        "weights": str(weights),
        "weights_sha256": weights_sha256,
        "manifest_sha256": file_sha256(manifest) if manifest.is_file() else None,
        "intended_use": metadata.get("intended_use"),
    }


def segment(
    *,
    bundle: str,
    input: str,
    output: str,
    series: str | None = None,
    study: str | None = None,
    upload: bool = False,
    device: str | None = None,
    checkpoint: str | None = None,
    overrides: str | None = None,
    backend: str = "torch",
) -> str:
    """Segment one scan with one bundle; write ``<name>_seg.nii.gz``, ``<name>_overlay.png`` and
    ``<name>_report.json`` into ``output`` (and ``<name>_seg.dcm``, a DICOM Segmentation, for a
    DICOM input) and return the report's path.

    The label volume is on the scan's own grid, with its affine; the DICOM SEG references the source
    series and its frame of reference, one segment per class, one frame per source slice. The
    report gives the volume in mL of each structure, the bundle's name, version and checksums, the
    scan's checksum, the date, the device and the run time. The scan and the weights are first
    copied into a private staging folder and hashed there: the checksums are those of exactly the
    bytes used. A DICOM series is refused when its slices do not make one volume (missing slice,
    uneven spacing, mixed orientations). The weights say what input they expect (``input_contract``;
    the shipped brain bundles: a brain-extracted T1, zero outside the brain, as FSL BET, SynthStrip
    or HD-BET make it; a whole head is refused), and the model card says it in words. Nothing is left in ``output``, and nothing is uploaded,
    when anything fails.

    Args:
        bundle: the bundle folder, e.g. ``bundles/unetr``.
        input: a NIfTI file, a folder of DICOM files, or the root address of a DICOMweb server
            (starting with ``http``, e.g. Orthanc's ``/dicom-web``) with ``--study``; credentials
            from ``DICOMWEB_USERNAME`` and ``DICOMWEB_PASSWORD`` or a netrc file, never in the address.
        output: folder for the outputs (created if needed).
        series: DICOM series instance UID, when the folder or study holds several series.
        study: study instance UID on the DICOMweb server of ``input``.
        upload: store the DICOM SEG back on the DICOMweb server of ``input`` (STOW-RS).
        device: ``cpu``, ``cuda`` or ``cuda:N``; default: the first GPU when there is one, else the CPU.
        checkpoint: weights to use instead of the bundle's ``models/model.pt``; the classes,
            channels, spacing, normalisation and network sizes they were trained with are read
            from them.
        overrides: a JSON file of config keys to change (e.g. ``sw_batch_size``); keys that
            contradict the weights (another spacing, other classes ...) are refused by name.
        backend: ``torch`` (eager PyTorch, the default), ``onnx`` (ONNX Runtime on the CPU, with the
            ``model.onnx`` that ``python -m common export`` wrote beside the weights and that was
            exported from exactly them), or ``auto``: where ``onnx`` can run, both race on the
            first four windows and the faster runs the rest (the report gives both times), else
            ``torch``. Setting up and timing both costs seconds that a scan of few windows does not
            win back (docs/benchmarks.md, "What segment costs").
    """
    started = time.perf_counter()
    folder = bundle_folder(bundle)
    metadata = read_metadata(folder)
    remote = is_dicomweb(input)
    if remote and study is None:
        raise InputError(f"{input}: a DICOMweb server; say which study with --study UID")
    if upload and not remote:
        raise InputError(f"{input}: --upload stores the DICOM SEG on the DICOMweb server given as --input; this is a local scan")
    scan = None if remote else find_scan(input, series)
    url = checked_url(input) if remote else None
    chosen = choose_device(device)
    settings = read_overrides(overrides)
    weights = Path(checkpoint) if checkpoint else folder / "models" / "model.pt"
    if not weights.is_file():
        raise InputError(f"{weights}: checkpoint not found; train the bundle first or pass --checkpoint")
    destination = Path(output).absolute()
    staging, created = open_output_folder(destination)
    moved: list[Path] = []
    try:
        if remote:
            series_uid, _ = pull_series(url, study, series, staging / "input")
            local = find_scan(staging / "input", series_uid)
            name, source = series_uid, f"{url}/studies/{study}/series/{series_uid}"
        else:
            local = scan.staged(staging / "input")
            name, source = scan.name, str(scan.path)
        seg_problem = seg_source_problem(local.files) if local.series_uid is not None else "the input is not DICOM"
        if upload and seg_problem:
            raise InputError(f"{source}: no DICOM SEG can be made to upload: {seg_problem}")
        if local.series_uid is not None and seg_problem:
            logger.info(f"no DICOM SEG: {seg_problem}")
        logger.info(f"segmenting {source} with {metadata['name']} {metadata['version']} on {chosen}")
        (staging / "weights").mkdir()
        used_weights = Path(shutil.copyfile(weights, staging / "weights" / weights.name))
        weights_sha256 = file_sha256(used_weights)
        with errors_naming(originals={used_weights: str(weights), local.source: source}):
            exported = onnx_network(backend, chosen, weights, used_weights)
            run_settings = {**settings, **backend_settings(backend, exported)}
            written, names, network, used = run_with_cpu_fallback(folder, local, staging, chosen, used_weights, run_settings)
        label = LoadImage(image_only=True, ensure_channel_first=True, dtype=None)(written)
        load_image = LoadImage(reader=local.reader(), image_only=True, ensure_channel_first=True)
        load_image.register(StreamingNibabelReader())
        image = load_image(local.source)
        kinds = [("seg", ".nii.gz"), ("overlay", ".png"), ("report", ".json")]
        if not seg_problem:
            kinds.insert(1, ("dicom_seg", ".dcm"))
        outputs = {kind: staging / f"{name}_{'seg' if kind == 'dicom_seg' else kind}{suffix}" for kind, suffix in kinds}
        os.replace(written, outputs["seg"])
        save_overlay(image, label, names, outputs["overlay"], title=f"{name}: {metadata['name']} {metadata['version']}")
        if "dicom_seg" in outputs:
            write_dicom_seg(label, local.files, names, metadata["name"], metadata["version"], outputs["dicom_seg"])
        report = {
            "scan": {"path": source, "series_uid": local.series_uid, "sha256": local.sha256(),
                     "shape": list(label.shape[1:]), "spacing_mm": [round(float(s), 4) for s in label.pixdim[:3]]},
            "volumes_ml": class_volumes_ml(label, names),
            "bundle": bundle_facts(folder, metadata, weights, weights_sha256),
            "outputs": {kind: path.name for kind, path in outputs.items() if kind != "report"},
            "uploaded_to": url if upload else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": str(used),
            "backend": backend_description(network),
            "runtime_s": round(time.perf_counter() - started, 2),
            "software": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__},
        }
        write_json(outputs["report"], report)
        if upload:
            store(url, outputs["dicom_seg"])
        for path in outputs.values():
            os.replace(path, destination / path.name)
            moved.append(destination / path.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for path in moved:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(destination, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    logger.info(f"volumes (mL): {report['volumes_ml']}; outputs in {destination}")
    return str(destination / outputs["report"].name)
