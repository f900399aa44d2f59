"""The clinician's path: ``python -m common segment`` on NIfTI and DICOM, bad input on that path,
and self-contained packages (``package`` / ``verify``) that run outside the repository."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import ITKReader
from monai.transforms import LoadImage

from common.errors import InputError
from common.io import file_sha256
from conftest import BUNDLES, OBLIQUE, REPO_ROOT, TRAINED_BUNDLE, cli, last_line, run_bundle, subprocess_env, write_volume

pytestmark = pytest.mark.xdist_group("tiny_unetr")  # one worker trains the shared tiny weights (conftest.trained)
BUNDLE = TRAINED_BUNDLE


def segment_args(trained: dict[str, Path], scan: Path, output: Path, *extra: str) -> list[str]:
    return ["segment", "--bundle", str(BUNDLES / BUNDLE), "--input", str(scan), "--output", str(output),
            "--checkpoint", str(trained["weights"]), *extra]


def write_dicom(path: Path, image: np.ndarray, affine: np.ndarray) -> None:
    """One multi-frame DICOM file (its own series) of ``image`` with the geometry of ``affine`` (RAS)."""
    import itk

    volume = itk.image_from_array(np.ascontiguousarray(np.clip(image * 1000, 0, 65535).astype(np.uint16).T))
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    volume.SetSpacing(spacing.tolist())
    volume.SetDirection(itk.matrix_from_array(lps / spacing))
    volume.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    itk.imwrite(volume, str(path))


def test_segment_writes_label_overlay_and_report_on_the_scan_grid(trained: dict[str, Path], tmp_path: Path) -> None:
    result = cli(*segment_args(trained, trained["scan"], tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["oblique_overlay.png", "oblique_report.json", "oblique_seg.nii.gz"]
    scan, seg = nib.load(trained["scan"]), nib.load(tmp_path / "out" / "oblique_seg.nii.gz")
    assert seg.shape == scan.shape
    np.testing.assert_allclose(seg.affine, scan.affine, atol=1e-4)
    labels = np.asarray(seg.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    report = json.loads((tmp_path / "out" / "oblique_report.json").read_text())
    voxel_ml = abs(np.linalg.det(OBLIQUE[:3, :3])) / 1000
    assert report["volumes_ml"]["CSF"] == pytest.approx((labels == 1).sum() * voxel_ml, abs=1e-3)
    assert set(report["volumes_ml"]) == {"CSF", "grey matter", "white matter"}
    assert report["bundle"]["name"] == BUNDLE and report["device"] == "cpu" and report["runtime_s"] > 0
    assert report["scan"]["sha256"] == file_sha256(trained["scan"])  # the bytes used, hashed in the staging folder
    assert report["bundle"]["weights_sha256"] == file_sha256(trained["weights"])
    assert report["outputs_sha256"]["seg"] == file_sha256(tmp_path / "out" / "oblique_seg.nii.gz")
    assert (tmp_path / "out" / "oblique_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "%" in result.stderr  # sliding-window progress bar


def test_segment_reads_every_dicom_series_or_the_chosen_one_and_keeps_its_geometry(trained: dict[str, Path], tmp_path: Path) -> None:
    scan = nib.load(trained["scan"])
    image = scan.get_fdata().astype(np.float32)
    write_dicom(tmp_path / "study" / "first.dcm", image, scan.affine)
    write_dicom(tmp_path / "study" / "second.dcm", image[::-1].copy(), scan.affine)
    from common.cli.scan import Scan, dicom_series

    series_files = dicom_series(tmp_path / "study")
    uids = sorted(series_files)

    every = cli(*segment_args(trained, tmp_path / "study", tmp_path / "every"))
    assert every.returncode == 0, every.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "every").iterdir()) == sorted(  # two series of one folder never share outputs
        ["summary.csv", *(f"study_{uid}_{kind}" for uid in uids for kind in ("overlay.png", "report.json", "seg.nii.gz"))])
    first = json.loads((tmp_path / "every" / f"study_{uids[0]}_report.json").read_text())
    assert first["scan"]["series_uid"] == uids[0] and first["scan"]["path"] == str(tmp_path / "study")
    assert first["scan"]["sha256"] == Scan(tmp_path / "study", series_files[uids[0]], uids[0]).sha256()  # its files, nothing else

    uid = uids[1]
    chosen = cli(*segment_args(trained, tmp_path / "study", tmp_path / "out", "--series", uid))
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"study_{uid}_{kind}" for kind in ("overlay.png", "report.json", "seg.nii.gz")]
    seg = LoadImage(image_only=True)(tmp_path / "out" / f"study_{uid}_seg.nii.gz")
    dicom = LoadImage(reader=ITKReader(series_name=uid), image_only=True)(tmp_path / "study")
    assert seg.shape == dicom.shape
    np.testing.assert_allclose(seg.affine.numpy(), dicom.affine.numpy(), atol=1e-3)
    assert json.loads((tmp_path / "out" / f"study_{uid}_report.json").read_text())["scan"]["series_uid"] == uid
    assert (tmp_path / "out" / f"study_{uid}_seg.nii.gz").read_bytes() == (tmp_path / "every" / f"study_{uid}_seg.nii.gz").read_bytes()


def bad_checkpoint(kind: str, trained: dict[str, Path], folder: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(trained["weights"].read_bytes()[:1000])
    else:  # a pickle that would run code on a plain torch.load
        torch.save({"model": torch.load(trained["weights"], weights_only=True)["model"], "hook": shutil.rmtree}, path)
    return path


@pytest.mark.parametrize(
    "case, problem",
    [
        ("empty folder", "empty folder, no scan to segment"),
        ("truncated checkpoint", "not a loadable weights-only checkpoint"),
        ("pickled code", "not a loadable weights-only checkpoint"),
        ("two channels", "the network takes 1 channel(s), the image has 2"),
        ("output not writable", "cannot write the outputs there"),
        ("missing overrides", "cannot read config overrides"),
    ],
)
def test_segment_refuses_bad_input_in_one_line_and_writes_nothing(
    case: str, problem: str, trained: dict[str, Path], tmp_path: Path
) -> None:
    scan, output, extra = trained["scan"], tmp_path / "out", []
    if case == "empty folder":
        scan = tmp_path / "empty"
        scan.mkdir()
    elif case in ("truncated checkpoint", "pickled code"):
        extra = ["--checkpoint", str(bad_checkpoint(case.split()[0], trained, tmp_path))]
    elif case == "two channels":
        image = nib.load(trained["scan"]).get_fdata().astype(np.float32)
        scan = write_volume(tmp_path / "two.nii.gz", np.stack([image, image], axis=-1), OBLIQUE)
    elif os.geteuid() == 0:  # root writes through file modes; sysfs refuses new files even to root
        output = Path("/sys/kernel")
    else:
        output.mkdir(mode=0o555)
    args = segment_args(trained, scan, output)
    if case == "missing overrides":
        args += ["--overrides", str(tmp_path / "missing.json")]
    before = sorted(output.iterdir()) if output.exists() else None
    result = cli(*args, *extra)
    assert result.returncode != 0
    line = last_line(result)
    assert line.startswith("error: ") and problem in line, result.stderr[-2000:]
    named = {"empty folder": scan, "two channels": scan, "output not writable": output,
             "missing overrides": tmp_path / "missing.json"}.get(case, Path(extra[-1]) if extra else None)
    assert str(named) in line
    assert (sorted(output.iterdir()) if output.exists() else None) == before


def test_help_explains_every_flag() -> None:
    result = cli("segment", "--help")
    text = result.stdout + result.stderr
    for flag in ("--bundle", "--input", "--output", "--series", "--device", "--checkpoint", "--overrides"):
        assert flag in text


@pytest.fixture(scope="module")
def package_zip(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m common package`` of a copy of ``unetr`` holding the tiny weights."""
    work = tmp_path_factory.mktemp("package")
    bundle = work / BUNDLE
    shutil.copytree(BUNDLES / BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "eval", "__pycache__"))
    (bundle / "models").mkdir()
    shutil.copy2(trained["weights"], bundle / "models" / "model.pt")
    result = cli("package", str(bundle), "--output_dir", str(work / "dist"))
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def unzip(archive: Path, target: Path) -> Path:
    with zipfile.ZipFile(archive) as bundle_zip:
        bundle_zip.extractall(target)
    return target / BUNDLE


@pytest.mark.slow
def test_unzipped_package_verifies_and_segments_on_its_own(package_zip: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    assert package_zip.name == f"unetr-{json.loads((BUNDLES / BUNDLE / 'configs' / 'metadata.json').read_text())['version']}.zip"
    assert cli("verify", str(package_zip)).returncode == 0
    folder = unzip(package_zip, tmp_path)
    assert REPO_ROOT not in folder.parents
    assert {"configs", "scripts", "common", "models", "docs", "LICENSE", "requirements.txt", "manifest.sha256"} <= {p.name for p in folder.iterdir()}
    imported = subprocess.run([sys.executable, "-c", "import common, scripts; print(common.__file__)"], cwd=folder, env=subprocess_env(),
                              capture_output=True, text=True, check=True)
    assert Path(imported.stdout.strip()).is_relative_to(folder)
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy2(trained["scan"], scans / "oblique.nii.gz")
    inferred = run_bundle(BUNDLE, ["inference.json"], {"input_dir": str(scans), "output_dir": str(tmp_path / "seg"), "num_workers": 0},
                          cwd=folder, config_dir=folder / "configs")
    seg = nib.load(tmp_path / "seg" / "oblique_seg.nii.gz")
    np.testing.assert_allclose(seg.affine, OBLIQUE, atol=1e-4)
    segmented = cli("segment", "--bundle", ".", "--input", str(scans / "oblique.nii.gz"), "--output", str(tmp_path / "clinic"), cwd=folder)
    assert segmented.returncode == 0, segmented.stderr[-3000:] + inferred.stderr[-500:]
    report = json.loads((tmp_path / "clinic" / "oblique_report.json").read_text())
    assert report["bundle"]["manifest_sha256"] is not None
    assert cli("verify", str(folder)).returncode == 0  # what running it wrote is not counted


def test_verify_refuses_a_tampered_package(package_zip: Path, tmp_path: Path) -> None:
    folder = unzip(package_zip, tmp_path)
    config = folder / "configs" / "inference.json"
    config.write_text(config.read_text().replace('"overlap": 0.5', '"overlap": 0.1'))
    (folder / "scripts" / "extra.py").write_text("print('not shipped')\n")
    result = cli("verify", str(folder))
    assert result.returncode != 0
    line = last_line(result)
    assert "configs/inference.json: changed (SHA-256 differs)" in line and "scripts/extra.py: not in the manifest" in line


def test_package_refuses_a_bundle_without_weights(tmp_path: Path) -> None:
    bundle = tmp_path / BUNDLE
    shutil.copytree(BUNDLES / BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "eval", "__pycache__"))
    result = cli("package", str(bundle), "--output_dir", str(tmp_path / "dist"))
    assert result.returncode != 0 and "no trained weights to package" in last_line(result)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


CODE_LIKE_NAMES = ['$print("INJECTED")or"x"', "@network_def", "%train.json#run"]  # '#' too: MONAI's key separator


def injected(result: subprocess.CompletedProcess) -> bool:
    """Whether the ``$print("INJECTED")`` of a file name ran (its name in a log line is no harm)."""
    return "INJECTED" in [line.strip() for line in (result.stdout + result.stderr).splitlines()]


def test_file_and_folder_names_that_look_like_config_code_stay_data(trained: dict[str, Path], tmp_path: Path) -> None:
    """MONAI reads a config string starting with ``$``, ``@`` or ``%`` as code, a reference or a
    macro; scan names and folders are passed as data (absolute paths), whatever they are called:
    a folder so named given to ``segment``, holding scans so named, and the same scans through
    ``inference.json``."""
    folder = tmp_path / CODE_LIKE_NAMES[0]
    folder.mkdir()
    for name in CODE_LIKE_NAMES:
        shutil.copy2(trained["scan"], folder / f"{name}.nii.gz")
    result = cli("segment", "--bundle", str(BUNDLES / BUNDLE), "--input", CODE_LIKE_NAMES[0], "--output", f"{CODE_LIKE_NAMES[2]}/out",
                 "--checkpoint", str(trained["weights"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not injected(result)
    assert sorted(p.name for p in (tmp_path / CODE_LIKE_NAMES[2] / "out").iterdir()) == sorted(
        ["summary.csv", *(f"{name}_{kind}" for name in CODE_LIKE_NAMES for kind in ("overlay.png", "report.json", "seg.nii.gz"))])
    scans = tmp_path / "scans"  # a folder given on the monai.bundle command line cannot hold '#'
    shutil.copytree(folder, scans)
    inferred = run_bundle(BUNDLE, ["inference.json"], {"input_dir": str(scans), "output_dir": str(tmp_path / "segs"),
                                                       "ckpt_path": str(trained["weights"]), "num_workers": 0})
    assert not injected(inferred)
    assert sorted(p.name for p in (tmp_path / "segs").iterdir()) == sorted(f"{name}_seg.nii.gz" for name in CODE_LIKE_NAMES)


@pytest.mark.parametrize(
    "case, problem",
    [
        ("missing slice", "a slice is missing between 8.00 and 12.00 mm (a gap of 4.00 mm, slices every 2.00 mm)"),
        ("uneven spacing", "uneven slice spacing, from 1.600 to 2.000 mm"),
        ("mixed orientations", "the series mixes slice orientations"),
    ],
)
def test_a_dicom_series_that_is_not_one_volume_is_refused(case: str, problem: str, trained: dict[str, Path], tmp_path: Path) -> None:
    from conftest import write_dicom_series

    volume = np.full((24, 20, 10), 500.0, dtype=np.float32)
    positions = [2.0 * i for i in range(10)]
    if case == "missing slice":
        positions = [p for p in positions if p != 10.0] + [20.0]
    elif case == "uneven spacing":
        positions = [0.0, 2.0, 4.0, 6.0, 8.0, 9.6, 11.6, 13.6, 15.6, 17.6]
    write_dicom_series(tmp_path / "series", volume, positions=positions, tilted={5} if case == "mixed orientations" else None)
    result = cli(*segment_args(trained, tmp_path / "series", tmp_path / "out"))
    assert result.returncode != 0
    assert last_line(result) .startswith(f"error: {tmp_path / 'series'}: ") and problem in last_line(result), result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_an_export_that_fails_monai_verification_is_named_and_removed(trained: dict[str, Path], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """MONAI's converter checks the export (``verify``); its mismatch becomes one line naming the
    file and the difference, and no export is left."""
    import common.cli.export

    def mismatching(filepath: str, converter_kwargs: dict, **kwargs) -> None:
        assert converter_kwargs["verify"] and converter_kwargs["atol"] == 1e-4 and converter_kwargs["use_ort"]
        Path(filepath).write_bytes(b"half an export")
        raise AssertionError("Tensor-likes are not close!\n\nMismatched elements: 3 / 64\nGreatest absolute difference: 0.25 at index (0, 1)")

    monkeypatch.setattr(common.cli.export, "onnx_export", mismatching)
    weights = Path(shutil.copy2(trained["weights"], tmp_path / "model.pt"))
    with pytest.raises(InputError, match=r"model.onnx: onnx export differs from the eager network by more than 0.0001 "
                                         r"\(Greatest absolute difference: 0.25 at index \(0, 1\)\)"):
        common.cli.export.export(str(BUNDLES / BUNDLE), formats="onnx", checkpoint=str(weights))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.fixture(scope="module")
def exported(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny weights with ``model.onnx`` exported beside them."""
    folder = tmp_path_factory.mktemp("exported")
    weights = Path(shutil.copy2(trained["weights"], folder / "model.pt"))
    result = cli("export", str(BUNDLES / BUNDLE), "--checkpoint", str(weights), "--formats", "onnx")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "model.onnx").is_file()
    return weights


@pytest.mark.slow
def test_onnx_runtime_gives_the_eager_labels_and_says_so(trained: dict[str, Path], exported: Path, tmp_path: Path) -> None:
    """``onnx`` and eager PyTorch label alike; ``auto`` races them (on a scan of several windows) and
    the report names the faster and both times; with no ``--backend``, eager PyTorch (``torch``)
    runs although ``model.onnx`` is there."""
    image = np.asarray(nib.load(trained["scan"]).dataobj)
    wide = write_volume(tmp_path / "wide.nii.gz", np.tile(image, (2, 2, 1)), OBLIQUE)
    labels, reports = {}, {}
    for backend in ("default", "onnx", "auto"):
        args = ["segment", "--bundle", str(BUNDLES / BUNDLE), "--input", str(wide), "--output", str(tmp_path / backend),
                "--checkpoint", str(exported), "--device", "cpu"] + ([] if backend == "default" else ["--backend", backend])
        result = cli(*args)
        assert result.returncode == 0, result.stderr[-2000:]
        labels[backend] = np.asarray(nib.load(tmp_path / backend / "wide_seg.nii.gz").dataobj)
        reports[backend] = json.loads((tmp_path / backend / "wide_report.json").read_text())
    assert reports["default"]["backend"] == "pytorch"
    assert reports["onnx"]["backend"].startswith("onnxruntime (model.onnx")
    assert re.fullmatch(rf"({re.escape(reports['onnx']['backend'])}|pytorch), the faster per window \(pytorch \d+ ms, onnxruntime \d+ ms\)",
                        reports["auto"]["backend"]), reports["auto"]["backend"]
    assert np.mean(labels["onnx"] != labels["default"]) < 1e-4 and np.mean(labels["auto"] != labels["default"]) < 1e-4


@pytest.mark.slow
def test_onnx_of_other_weights_is_refused_or_passed_over(exported: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    """``model.onnx`` beside weights it was not exported from: ``--backend onnx`` refuses by name,
    ``auto`` runs the weights with PyTorch; ``package`` refuses to ship the pair."""
    other = tmp_path / "other"
    other.mkdir()
    checkpoint = torch.load(exported, weights_only=True)
    first = next(iter(checkpoint["model"]))
    checkpoint["model"][first] = checkpoint["model"][first] + 0.01
    torch.save(checkpoint, other / "model.pt")
    shutil.copy2(exported.with_name("model.onnx"), other / "model.onnx")
    base = ["segment", "--bundle", str(BUNDLES / BUNDLE), "--input", str(trained["scan"]), "--checkpoint", str(other / "model.pt"), "--device", "cpu"]
    refused = cli(*base, "--output", str(tmp_path / "refused"), "--backend", "onnx")
    assert refused.returncode != 0 and f"--backend onnx: {other / 'model.onnx'}: not exported from {other / 'model.pt'}" in last_line(refused)
    assert not (tmp_path / "refused").exists()
    passed_over = cli(*base, "--output", str(tmp_path / "auto"), "--backend", "auto")
    assert passed_over.returncode == 0, passed_over.stderr[-2000:]
    assert json.loads((tmp_path / "auto" / "oblique_report.json").read_text())["backend"] == "pytorch"
    unpackaged = cli("package", str(BUNDLES / BUNDLE), "--checkpoint", str(other / "model.pt"), "--output_dir", str(tmp_path / "dist"))
    assert unpackaged.returncode != 0 and f"{other / 'model.onnx'}: not exported from" in last_line(unpackaged)
