"""Self-contained bundle packages: the bundle, its weights and the ``common`` code it runs on, in one
zip with a SHA-256 manifest of every file; and the check of that manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

from common.bundle import bundle_folder, load_network, read_metadata
from common.workflow.checkpoints import model_state, trained_settings
from common.errors import InputError
from common.io import file_sha256, write_atomically
from common.cli.onnx_network import OnnxNetwork
from common.cli.verify import MANIFEST
from common.transforms.intensity import describe_normalization

BUNDLE_PARTS = ("configs", "scripts", "docs", "LICENSE")
RUNTIME_PACKAGES = ("torch", "monai", "pytorch-ignite", "nibabel", "itk", "einops", "numpy", "fire", "tqdm", "matplotlib",
                    "pydicom", "highdicom", "dicomweb-client", "onnxruntime")
# written by running a bundle, not part of what is shipped
RUN_OUTPUTS = ("__pycache__", "runs", "eval")


def runtime_requirements() -> str:
    """Pinned requirements of a packaged bundle: the versions installed where it was packaged."""
    lines = ["# what the packaged bundle runs on, pinned to the versions it was packaged and tested with"]
    for name in RUNTIME_PACKAGES:
        try:
            lines.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def describe_data_format(metadata: dict, channels: list[str], classes: list[str], roi_size: list[int]) -> None:
    """Set, in place, ``metadata``'s ``network_data_format`` (input channels, output classes, ROI)
    and ``label_classes`` to ``channels``, ``classes`` (background first) and ``roi_size``."""
    image = metadata["network_data_format"]["inputs"]["image"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    image.update(num_channels=len(channels), channel_def={str(i): n for i, n in enumerate(channels)})
    pred.update(num_channels=len(classes), channel_def={str(i): n for i, n in enumerate(classes)})
    for part in (image, pred):
        part["spatial_shape"] = list(roi_size)
    metadata["label_classes"] = ", ".join(f"{i}: {n}" for i, n in enumerate(classes))


def describe_spacing(spacing: list[float]) -> str:
    """``[2.0, 2.0, 2.0]`` as ``"2 x 2 x 2 mm"``."""
    return " x ".join(f"{s:g}" for s in spacing) + " mm"


def describe_weights(metadata: dict, settings: dict) -> dict:
    """``metadata`` (a bundle's ``metadata.json``) describing the weights trained with ``settings``
    (:func:`common.workflow.checkpoints.trained_settings`): input channels and modality, classes, ROI,
    pre-processing and intended use."""
    channels, classes = settings["channel_names"], settings["class_names"]
    describe_data_format(metadata, channels, classes, settings["roi_size"])
    image = metadata["network_data_format"]["inputs"]["image"]
    image["modality"] = "CT" if all(n.upper() == "CT" for n in channels) else image["modality"]
    foreground = ", ".join(classes[1:])
    metadata.update(
        task=f"Segmentation of {foreground} in {', '.join(channels)} images",
        image_classes=f"{len(channels)}-channel {', '.join(channels)}, resampled to {describe_spacing(settings['spacing'])} RAS, "
        f"{describe_normalization(settings['normalization'])}",
        pred_classes=f"{len(classes)} channels: {', '.join(classes)}",
        intended_use=f"Demonstration and research only, not for clinical use: segments {foreground} in "
        f"{', '.join(channels)} images like those the weights were trained on (see docs/README.md).",
    )
    return metadata


def write_manifest(folder: Path) -> None:
    """``manifest.sha256`` in ``sha256sum`` format: one ``<digest>  <path>`` line per file, sorted."""
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST and "__pycache__" not in p.parts]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n")


def package(bundle: str, output_dir: str = "dist", checkpoint: str | None = None) -> str:
    """Build ``<output_dir>/<name>-<version>.zip``: the bundle folder (configs, scripts, docs,
    licence) with its trained ``models/model.pt`` (and ``models/model.onnx`` when it was exported from
    them, which ``segment`` then runs with ONNX Runtime), the ``common`` package vendored inside it, a pinned
    ``requirements.txt`` and ``manifest.sha256``. The packaged ``metadata.json`` describes the
    weights (classes, channels, ROI, pre-processing, intended use, from what they recorded).
    Unzipped, it runs on its own:
    ``python -m monai.bundle run --config_file configs/inference.json --input_dir <scans>`` or
    ``python -m common segment --bundle . --input <scan> --output <folder>`` from inside it.

    Args:
        bundle: the bundle folder, e.g. ``bundles/unetr``.
        output_dir: folder of the zip.
        checkpoint: weights to package instead of the bundle's ``models/model.pt`` (e.g.
            ``models/vertebrae_ct/model.pt``).
    """
    folder = bundle_folder(bundle)
    metadata = read_metadata(folder)
    weights = Path(checkpoint) if checkpoint else folder / "models" / "model.pt"
    if not weights.is_file():
        raise InputError(f"{weights}: no trained weights to package; train the bundle first (make demo BUNDLE={folder.name})")
    settings = trained_settings(weights)
    name = f"{metadata['name']}-{metadata['version']}"
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / metadata["name"]
        staged.mkdir()
        for part in BUNDLE_PARTS:
            source = folder / part
            if source.is_dir():
                shutil.copytree(source, staged / part, ignore=shutil.ignore_patterns(*RUN_OUTPUTS))
            elif source.is_file():
                shutil.copy2(source, staged / part)
        (staged / "models").mkdir()
        shutil.copy2(weights, staged / "models" / "model.pt")
        exported = weights.with_name("model.onnx")
        if exported.is_file():
            if not OnnxNetwork(exported).exported_from(model_state(weights)):
                raise InputError(f"{exported}: not exported from {weights}; export them again (python -m common export) or move it")
            shutil.copy2(exported, staged / "models" / "model.onnx")
        shutil.copytree(Path(__file__).parent, staged / "common", ignore=shutil.ignore_patterns(*RUN_OUTPUTS))
        (staged / "requirements.txt").write_text(runtime_requirements())
        if settings:
            described = describe_weights(read_metadata(staged), settings)
            (staged / "configs" / "metadata.json").write_text(json.dumps(described, indent=4) + "\n")
        load_network(staged, staged / "models" / "model.pt")
        write_manifest(staged)
        archive = Path(output_dir) / f"{name}.zip"

        def write_zip(path: Path) -> None:
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle_zip:
                for file in sorted(staged.rglob("*")):
                    if file.is_file() and "__pycache__" not in file.parts:
                        bundle_zip.write(file, PurePosixPath(metadata["name"], file.relative_to(staged).as_posix()))

        write_atomically(archive, write_zip)
    return str(archive)
