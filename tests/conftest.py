"""Shared fixtures: a tiny synthetic data set and helpers to run bundles through ``monai.bundle``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import create_test_image_3d

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLES = REPO_ROOT / "bundles"
sys.path.insert(0, str(REPO_ROOT / "label_app"))
from pacs import stop as stop_process_group  # noqa: E402  (the launcher's: a server's whole process group)

DEMO_LABELS = {"0": "background", "1": "CSF", "2": "grey matter", "3": "white matter"}  # the bundles' default classes
BUNDLE_NAMES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "train.json").is_file())

# Overrides that make a bundle train in seconds: the networks' smallest sensible sizes.
_TINY_RUN = {"roi_size": [32, 32, 32], "num_samples": 2, "sw_batch_size": 2, "num_workers": 0, "max_epochs": 1, "val_interval": 1}
TINY_OVERRIDES = {
    "unetr": {**_TINY_RUN, "feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2},
    "attention_unet": {**_TINY_RUN, "feature_size": 4},
    "nonlocal_unet": {**_TINY_RUN, "feature_size": 4, "num_heads": 2},
    "ann_net": {**_TINY_RUN, "feature_size": 4},
    "mt_unet": {**_TINY_RUN, "feature_size": 4, "num_heads": 2, "window_size": 3},
    "msga_net": {**_TINY_RUN, "feature_size": 4},
}


def network_overrides(bundle: str) -> dict:
    """The tiny overrides that size the network (the keys ``inference.json`` also has)."""
    infer = json.loads((BUNDLES / bundle / "configs" / "inference.json").read_text())
    return {key: value for key, value in TINY_OVERRIDES[bundle].items() if key in infer}


def build_network(bundle: str, **sizes):
    """The bundle's ``network_def`` through ``monai.bundle``'s parser, with its tiny sizes and
    ``sizes`` on top, in eval mode (no settings read from any weights)."""
    from monai.bundle import ConfigParser

    from common.bundle import use_bundle_scripts

    use_bundle_scripts(BUNDLES / bundle)
    parser = ConfigParser(json.loads((BUNDLES / bundle / "configs" / "inference.json").read_text()))
    parser.update({"trained": {}, **network_overrides(bundle), **sizes})
    return parser.get_parsed_content("network_def").eval()


def recorded_settings(bundle: str, **changes) -> dict:
    """The settings (``trained_with``) a tiny training of ``bundle`` records in ``model.pt``, with ``changes``."""
    train = json.loads((BUNDLES / bundle / "configs" / "train.json").read_text())
    values = {**train, **TINY_OVERRIDES[bundle], **changes}
    return {key: values[key] for key in train["trained_with"]}


def train_overrides(bundle: str, dataset: Path, out: Path, **extra) -> dict:
    """Tiny training of ``bundle`` on ``dataset``, writing under ``out``."""
    return {**TINY_OVERRIDES[bundle], "dataset_dir": str(dataset), "ckpt_dir": str(out / "models"),
            "output_dir": str(out / "runs"), **extra}


def write_volume(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def make_dataset(root: Path, n_train: int = 1, n_val: int = 1, size: int = 36, seed: int = 0) -> Path:
    """A Decathlon-style data set of synthetic spheres: 4 classes (0..3), 2 mm RAS voxels."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    sections: dict[str, list] = {"training": [], "validation": []}
    for index in range(n_train + n_val):
        image, label = create_test_image_3d(size, size, size, num_objs=6, rad_max=8, num_seg_classes=3, random_state=np.random.RandomState(seed + index))
        name = f"case{index}.nii.gz"
        write_volume(root / "imagesTr" / name, image.astype(np.float32), affine)
        write_volume(root / "labelsTr" / name, label.astype(np.uint8), affine)
        section = "training" if index < n_train else "validation"
        sections[section].append({"image": f"imagesTr/{name}", "label": f"labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"labels": DEMO_LABELS, "modality": {"0": "T1"}, **sections}))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


TRAINED_BUNDLE = "unetr"
OBLIQUE = np.array([[0.0, -1.5, 0.1, 40.0], [1.5, 0.0, 0.0, -20.0], [0.0, 0.1, 1.5, 10.0], [0, 0, 0, 1]])


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny weights of ``unetr`` (they record their sizes) and a scan on an oblique grid, trained
    once per test process and shared by the tests of the clinician's, cohort and PACS paths."""
    out = tmp_path_factory.mktemp("trained_unetr")
    data = make_dataset(out / "data")
    run_bundle(TRAINED_BUNDLE, ["train.json"], train_overrides(TRAINED_BUNDLE, data, out))
    image = nib.load(data / "imagesTr" / "case1.nii.gz").get_fdata().astype(np.float32)
    scan = write_volume(out / "scans" / "oblique.nii.gz", image, OBLIQUE)
    return {"weights": out / "models" / "model.pt", "scan": scan, "root": out}


def cli(*args: str, cwd: Path = REPO_ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m common <args>`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "common", *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def bundle_command(bundle: str, configs: list[str], overrides: dict, config_dir: Path | None = None) -> list[str]:
    """``python -m monai.bundle run`` with ``configs`` (names under ``configs/``) and ``--key value`` overrides."""
    config_dir = BUNDLES / bundle / "configs" if config_dir is None else config_dir
    files = [str(config_dir / name) for name in configs]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(files) if len(files) > 1 else files[0]]
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return command


def subprocess_env() -> dict[str, str]:
    """The environment of a command a test runs: the test's own (as it is now: credentials a test
    sets count), one thread, no warnings, and no bytecode written, since some tests run a packaged
    bundle in its folder and then verify that folder (it refuses ``__pycache__``)."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def parsed_chain(key: str = "load_transforms", config: str = "train.json", **settings) -> list:
    """The transform chain at ``key`` of ``unetr``'s ``config`` (the same in every bundle), parsed with
    ``settings`` (``in_channels``, ``normalization``, ``augmentation`` ...) overriding it, as a list;
    entries a setting disables are left out, as MONAI leaves them out."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(json.loads((BUNDLES / "unetr" / "configs" / config).read_text()))
    parser.update({"trained": {}, "output_dir": "unused", **settings})
    chain = parser.get_parsed_content(key)
    return list(getattr(chain, "transforms", chain))


def run_bundle(
    bundle: str,
    configs: list[str],
    overrides: dict,
    cwd: Path = REPO_ROOT,
    config_dir: Path | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run a bundle config through the real ``monai.bundle`` entry point in a subprocess."""
    result = subprocess.run(
        bundle_command(bundle, configs, overrides, config_dir),
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bundle run failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def error_line_in_process(bundle: str, configs: list[str], overrides: dict) -> str:
    """Run ``configs`` of ``bundle`` in this process through ``monai.bundle.run`` (what
    ``python -m monai.bundle run`` calls, without paying a new process's imports) and return the
    line the command prints for the bad input it stops with (``error: <file>: <problem>``); the
    printing itself is checked by the tests that run the command."""
    from monai.bundle import run

    from common.bundle import use_bundle_scripts
    from common.errors import brief_message, find_input_error

    use_bundle_scripts(BUNDLES / bundle)
    files = [str(BUNDLES / bundle / "configs" / name) for name in configs]
    try:
        run(config_file=files if len(files) > 1 else files[0], **overrides)
    except Exception as err:  # noqa: BLE001 - the error is what is checked
        found = find_input_error(err)
        if found is None:
            raise
        return f"error: {brief_message(found)}"
    raise AssertionError(f"{bundle} {configs} ran to the end instead of stopping on bad input")


def write_dicom_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 2.0),
                       positions: list[float] | None = None, tilted: set[int] | None = None, series_uid: str | None = None,
                       study_uid: str | None = None, modality: str = "MR") -> str:
    """A classic single-frame DICOM series of ``volume`` ``(columns, rows, slices)``, one file per
    slice: axial slices ``spacing[2]`` mm apart (or at ``positions`` mm), in-plane ``spacing[:2]``;
    the slices of ``tilted`` get another orientation. Returns the series instance UID."""
    from dicom_series import slice_dataset
    from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame = generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(volume, 0, 4095).astype(np.uint16)
    for index in range(pixels.shape[2]):
        ds = slice_dataset(pixels[:, :, index], sop_class, (study_uid, series_uid, frame), modality, "TEST")
        ds.PatientName, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "Test^Patient", "1", 1, index + 1
        z = positions[index] if positions is not None else index * spacing[2]
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.8, 0.6] if tilted and index in tilted else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [float(spacing[1]), float(spacing[0])], float(spacing[2])
        ds.save_as(folder / f"slice_{index:04d}.dcm", enforce_file_format=True)
    return series_uid


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
