"""A user's own data: Decathlon, nnU-Net v2 and plain-folder layouts, k-fold splits, multi-channel
images, ``python -m common plan``, and the refusals of configs that contradict the data or the weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import create_test_image_3d
from monai.transforms import Compose

from common.transforms.augmentation import DEFAULT_POLICY
from common.workflow.data import describe_dataset, kfold_splits, load_datalist
from common.errors import InputError
from common.cli.plan import make_plan, roi_for, target_spacing
from conftest import REPO_ROOT, make_dataset, parsed_chain, write_volume

# nnU-Net's shrinking rule on a 300 x 300 x 40 median shape: z first (48 covers 1.2x its 40), then x and
# y in turn while they cover most, then z again
ROI_300_300_40 = [224, 224, 16]
CT_LABELS = {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "bone"}


def synthetic_case(seed: int, size: int = 24, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    image, label = create_test_image_3d(size, size, size, num_objs=5, rad_max=6, num_seg_classes=classes,
                                        random_state=np.random.RandomState(seed))
    return image.astype(np.float32), label.astype(np.uint8)


def decathlon_without_validation(root: Path, cases: int = 7, modality: str = "CT", affine: np.ndarray | None = None) -> Path:
    """A Decathlon data set as the MSD ships it: ``training`` and ``test`` only, intensities in HU
    when ``modality`` is CT."""
    training = []
    for index in range(cases):
        image, label = synthetic_case(index, classes=len(CT_LABELS) - 1)
        image = image * 1000 - 500 if modality == "CT" else image * 300
        write_volume(root / "imagesTr" / f"case_{index:03d}.nii.gz", image, affine)
        write_volume(root / "labelsTr" / f"case_{index:03d}.nii.gz", label, affine)
        training.append({"image": f"./imagesTr/case_{index:03d}.nii.gz", "label": f"./labelsTr/case_{index:03d}.nii.gz"})
    write_volume(root / "imagesTs" / "case_100.nii.gz", synthetic_case(100)[0], affine)
    description = {"name": "synthetic", "modality": {"0": modality}, "labels": CT_LABELS, "numTraining": cases,
                   "training": training, "test": ["./imagesTs/case_100.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def nnunet_dataset(root: Path, cases: int = 3, channels: tuple[str, ...] = ("T2", "ADC")) -> Path:
    """The nnU-Net v2 raw layout: one file per channel, labels as ``{"name": value}``."""
    for index in range(cases):
        image, label = synthetic_case(index)
        for channel in range(len(channels)):
            write_volume(root / "imagesTr" / f"prostate_{index:02d}_{channel:04d}.nii.gz", image * (channel + 1))
        write_volume(root / "labelsTr" / f"prostate_{index:02d}.nii.gz", label)
    description = {"channel_names": {str(i): name for i, name in enumerate(channels)},
                   "labels": {"background": 0, "zone a": 1, "zone b": 2, "zone c": 3}, "numTraining": cases, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def test_decathlon_without_validation_gets_a_deterministic_five_fold_split(tmp_path: Path) -> None:
    root = decathlon_without_validation(tmp_path / "data")
    train, val = (load_datalist(root / "dataset.json", section, root, fold=2) for section in ("training", "validation"))
    splits = json.loads((root / "splits.json").read_text())
    assert len(splits) == 5 and [len(s["val"]) for s in splits] == [2, 2, 1, 1, 1]
    assert sorted(c for s in splits for c in s["val"]) == [f"case_{i:03d}" for i in range(7)]  # every case validates once
    assert [Path(i["image"]).name for i in val] == [f"{c}.nii.gz" for c in splits[2]["val"]]
    assert len(train) == 6 and not {i["image"] for i in train} & {i["image"] for i in val}
    before = (root / "splits.json").read_bytes()
    (root / "splits.json").unlink()
    load_datalist(root / "dataset.json", "training", root)
    assert (root / "splits.json").read_bytes() == before  # recomputed identically
    assert [Path(i["image"]).name for i in load_datalist(root / "dataset.json", "test", root)] == ["case_100.nii.gz"]


def test_folds_are_those_of_scikit_learn_kfold_as_nnunet_makes_them() -> None:
    from sklearn.model_selection import KFold

    ids = [f"case_{i:03d}" for i in (5, 3, 11, 0, 7, 2, 9, 1, 4, 8, 6, 10, 12)]
    ours = kfold_splits(ids)
    ordered = np.sort(ids)
    for fold, (train, val) in enumerate(KFold(5, shuffle=True, random_state=12345).split(ordered)):
        assert ours[fold] == {"train": list(ordered[train]), "val": list(ordered[val])}


def test_splits_file_is_what_later_runs_use(tmp_path: Path) -> None:
    root = decathlon_without_validation(tmp_path / "data", cases=4)
    custom = [{"train": ["case_000", "case_001", "case_002"], "val": ["case_003"]}]
    (root / "splits.json").write_text(json.dumps(custom))
    assert [Path(i["image"]).name for i in load_datalist(root / "dataset.json", "validation", root)] == ["case_003.nii.gz"]
    with pytest.raises(InputError, match=r"--fold 1: .*splits.json has folds 0..0"):
        load_datalist(root / "dataset.json", "validation", root, fold=1)
    (root / "splits.json").write_text(json.dumps([{"train": ["case_000"], "val": ["case_009"]}]))
    with pytest.raises(InputError, match=r"splits.json: does not match the data set's cases .*'case_009'"):
        load_datalist(root / "dataset.json", "training", root)


def test_nnunet_layout_reads_one_file_per_channel(tmp_path: Path) -> None:
    root = nnunet_dataset(tmp_path / "Dataset001_Prostate")
    dataset = describe_dataset(root)
    assert dataset.layout == "nnunet" and dataset.channel_names == ["T2", "ADC"]
    assert dataset.class_names == ["background", "zone a", "zone b", "zone c"]
    items = load_datalist(root / "dataset.json", "training", root)
    assert all(isinstance(i["image"], list) and len(i["image"]) == 2 for i in items)
    loaded = Compose(parsed_chain(in_channels=2, num_classes=4, spacing=[1.0, 1.0, 1.0], input_contract=None))(items[0])
    assert loaded["image"].shape[0] == 2 and loaded["label"].shape[0] == 1
    (root / "imagesTr" / "prostate_01_0001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"prostate_01_0001.nii.gz: file not found \(channel 1 of case 'prostate_01'"):
        describe_dataset(root)


def test_four_dimensional_image_is_a_multi_channel_input(tmp_path: Path) -> None:
    """The Decathlon brain tumour task stores its four MRI sequences as one 4D NIfTI."""
    image, label = synthetic_case(0)
    path = write_volume(tmp_path / "imagesTr" / "brats.nii.gz", np.stack([image, 2 * image, 3 * image], axis=-1))
    write_volume(tmp_path / "labelsTr" / "brats.nii.gz", label)
    loaded = Compose(parsed_chain(in_channels=3, num_classes=4, spacing=[1.0, 1.0, 1.0], input_contract=None))(
        {"image": str(path), "label": str(tmp_path / "labelsTr" / "brats.nii.gz")})
    assert loaded["image"].shape == (3, 24, 24, 24)


def test_plain_folder_layout_splits_like_the_others(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "data", n_train=3, n_val=0)
    (root / "dataset.json").unlink()
    dataset = describe_dataset(root)
    assert dataset.layout == "folder" and dataset.class_names is None and len(dataset.training) == 3
    assert len(load_datalist(root / "dataset.json", "validation", root)) == 1
    assert (root / "splits.json").is_file()


def test_plan_of_a_ct_set_uses_the_foreground_statistics(tmp_path: Path) -> None:
    root = decathlon_without_validation(tmp_path / "data", cases=4, affine=np.diag([0.8, 0.8, 2.5, 1.0]))
    plan, notes = make_plan(str(root), max_roi_voxels=32**3)
    assert plan["num_classes"] == 5 and plan["class_names"] == list(CT_LABELS.values())
    assert plan["in_channels"] == 1 and plan["channel_names"] == ["CT"]
    assert plan["spacing"] == [0.8, 0.8, 2.5]  # anisotropic, but the coarse axis is too short to need the 10th percentile rule
    foreground = []
    for index in range(4):
        image = np.asarray(nib.load(root / "imagesTr" / f"case_{index:03d}.nii.gz").dataobj)
        label = np.asarray(nib.load(root / "labelsTr" / f"case_{index:03d}.nii.gz").dataobj)
        foreground.append(image[label > 0])
    norm = plan["normalization"]
    assert norm["mode"] == "ct"
    assert norm["mean"] == pytest.approx(np.mean([f.mean() for f in foreground]), rel=1e-3)
    assert norm["clip"][1] == pytest.approx(np.mean([np.percentile(f, 99.5) for f in foreground]), rel=2e-2)
    assert np.prod(plan["roi_size"]) <= 32**3 and all(r % 16 == 0 for r in plan["roi_size"])
    assert plan["augmentation"] == {**DEFAULT_POLICY, "bias_field_prob": 0.0}  # no coil shading in Hounsfield units
    assert any("fold 0 of the 4-fold split" in note for note in notes)


def test_plan_of_an_mri_set_normalises_per_image_and_is_reproducible(tmp_path: Path) -> None:
    root = nnunet_dataset(tmp_path / "data")
    command = [sys.executable, "-m", "common", "plan", "--dataset_dir", str(root)]
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    written = (root / "plan.json").read_bytes()
    assert "normalization: per image" in first.stdout and "roi_size [32, 32, 32]" in first.stdout
    plan = json.loads(written)
    assert plan["in_channels"] == 2 and plan["channel_names"] == ["T2", "ADC"] and plan["normalization"]["mode"] == "percentile"
    assert "augmentation" not in plan  # the bundle's own policy, bias field included
    subprocess.run(command, cwd=REPO_ROOT, capture_output=True, check=True, timeout=300)
    assert (root / "plan.json").read_bytes() == written


def test_plan_rules_for_anisotropic_spacing_and_the_memory_budget() -> None:
    thick = {"median": [0.7, 0.7, 5.0], "percentile_10_0": [0.6, 0.6, 3.0]}
    spacing, why = target_spacing(thick, {"median": [512, 512, 30]})
    assert spacing == [0.7, 0.7, 3.0] and "10th percentile" in why
    assert target_spacing(thick, {"median": [40, 40, 30]})[0] == [0.7, 0.7, 5.0]
    roi, why = roi_for([300, 300, 40], 96**3)
    assert roi == ROI_300_300_40 and np.prod(roi) <= 96**3 and "shrunk" in why
    assert roi_for([20, 20, 10], 96**3)[0] == [32, 32, 16]


def test_plan_refuses_class_names_that_would_run_as_code(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "data")
    datalist = json.loads((root / "dataset.json").read_text())
    datalist["labels"]["2"] = "$print('injected')"
    (root / "dataset.json").write_text(json.dumps(datalist))
    with pytest.raises(InputError, match=r"labels \"\$print\('injected'\)\" starts with '\$'"):
        describe_dataset(root)


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"num_classes": 5}, "class_names: 4 names ['background', 'CSF', 'grey matter', 'white matter'] for num_classes 5"),
        ({"class_names": ["background", "a", "b", "c"]}, "labels ['background', 'CSF', 'grey matter', 'white matter'], the config's class_names ['background', 'a', 'b', 'c']"),
        ({"in_channels": 2}, "1 input channel(s) ['T1'], the config's in_channels 2"),
    ],
)
def test_training_refuses_classes_or_channels_that_contradict_the_data(overrides: dict, problem: str, tmp_path: Path) -> None:
    from conftest import error_line_in_process, train_overrides

    root = make_dataset(tmp_path / "data")
    line = error_line_in_process("attention_unet", ["train.json"], train_overrides("attention_unet", root, tmp_path, **overrides))
    assert line.startswith("error: ") and problem in line, line
    assert not (tmp_path / "models").exists()


@pytest.fixture(scope="module", params=[pytest.param("own", marks=pytest.mark.xdist_group("own_data"))])
def trained_on_own_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny ``attention_unet`` trained on a two-channel nnU-Net data set at 1.2 x 1.2 x 1.8 mm (not
    the bundle's 2 mm), through its plan: the weights and the plan, nothing else, describe the run."""
    from conftest import run_bundle, train_overrides

    out = tmp_path_factory.mktemp("own_data")
    root = nnunet_dataset(out / "Dataset003_Zones", cases=3)
    for path in [*root.glob("imagesTr/*.nii.gz"), *root.glob("labelsTr/*.nii.gz")]:
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), np.diag([1.2, 1.2, 1.8, 1.0])), path)
    subprocess.run([sys.executable, "-m", "common", "plan", "--dataset_dir", str(root)], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300)
    plan = root / "plan.json"
    run_bundle(OWN_BUNDLE, ["train.json", str(plan)], train_overrides(OWN_BUNDLE, root, out))
    return {"root": root, "plan": plan, "weights": out / "models" / "model.pt", "out": out}


OWN_BUNDLE = "attention_unet"
ZONES = ["zone a", "zone b", "zone c"]


def test_weights_record_what_they_were_trained_with(trained_on_own_data: dict[str, Path]) -> None:
    metadata = torch_load_metadata(trained_on_own_data["weights"])
    plan = json.loads(trained_on_own_data["plan"].read_text())
    settings = metadata["settings"]
    for key in ("class_names", "channel_names", "in_channels", "num_classes", "spacing", "normalization"):
        assert settings[key] == plan[key], key
    assert settings["feature_size"] == 4 and settings["roi_size"] == [32, 32, 32]  # the tiny run's overrides


def torch_load_metadata(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)["metadata"]


def test_evaluate_scores_every_class_by_name_on_the_labels_own_grid(trained_on_own_data: dict[str, Path], tmp_path: Path) -> None:
    """``evaluate`` inverts the prediction to the label's grid: its Dice equals the Dice of
    ``inference.json``'s output (written on the image's grid) against the label file."""
    from conftest import run_bundle, train_overrides

    own = trained_on_own_data
    overrides = {**train_overrides(OWN_BUNDLE, own["root"], own["out"]), "output_dir": str(tmp_path / "eval")}
    result = run_bundle(OWN_BUNDLE, ["train.json", str(own["plan"]), "evaluate.json"], overrides)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["dice"]) == ZONES == list(metrics["hd95_mm"])
    assert all(name in result.stdout for name in ZONES)
    validation = json.loads((own["root"] / "splits.json").read_text())[0]["val"]
    assert [Path(row["image"]).name for row in metrics["images"]] == [f"{validation[0]}_0000.nii.gz"]

    images = load_datalist(own["root"] / "dataset.json", "validation", own["root"])
    inputs = tmp_path / "inputs"
    run_bundle(OWN_BUNDLE, ["inference.json"], {"input_dir": str(own["root"] / "imagesTr"), "output_dir": str(tmp_path / "seg"),
                                                "ckpt_path": str(own["weights"]), "num_workers": 0, "dataset#data": [{"image": images[0]["image"]}]})
    del inputs
    written = nib.load(next((tmp_path / "seg").glob("*_seg.nii.gz")))
    label = nib.load(images[0]["label"])
    assert written.shape == label.shape
    np.testing.assert_allclose(written.affine, label.affine, atol=1e-4)
    prediction, reference = np.asarray(written.dataobj), np.asarray(label.dataobj)
    for value, name in enumerate(ZONES, start=1):
        p, r = prediction == value, reference == value
        assert metrics["images"][0]["dice"][name] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()), abs=1e-3)


def test_inference_needs_only_the_weights_and_refuses_a_contradicting_override(trained_on_own_data: dict[str, Path], tmp_path: Path) -> None:
    from conftest import run_bundle

    own = trained_on_own_data
    case = load_datalist(own["root"] / "dataset.json", "training", own["root"])[0]
    base = {"ckpt_path": str(own["weights"]), "output_dir": str(tmp_path / "out"), "num_workers": 0, "dataset#data": [{"image": case["image"]}]}
    run_bundle(OWN_BUNDLE, ["inference.json"], base)
    assert len(list((tmp_path / "out").glob("*_seg.nii.gz"))) == 1
    refused = run_bundle(OWN_BUNDLE, ["inference.json"], {**base, "output_dir": str(tmp_path / "refused"), "spacing": [2.0, 2.0, 2.0]}, check=False)
    assert refused.returncode != 0
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {own['weights']}: the config contradicts the weights (spacing: trained with [1.2, 1.2, 1.8], the config has [2.0, 2.0, 2.0])")
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())


def test_segment_and_package_name_the_data_sets_classes(trained_on_own_data: dict[str, Path], tmp_path: Path) -> None:
    import zipfile

    from conftest import BUNDLES

    own = trained_on_own_data
    scan = write_volume(tmp_path / "scan.nii.gz", np.stack([synthetic_case(9)[0]] * 2, axis=-1), np.diag([1.2, 1.2, 1.8, 1.0]))
    command = [sys.executable, "-m", "common", "segment", "--bundle", str(BUNDLES / OWN_BUNDLE), "--input", str(scan),
               "--output", str(tmp_path / "results"), "--checkpoint", str(own["weights"])]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "scan_report.json").read_text())
    assert list(report["volumes_ml"]) == ZONES

    command = [sys.executable, "-m", "common", "package", str(BUNDLES / OWN_BUNDLE), "--output_dir", str(tmp_path / "dist"),
               "--checkpoint", str(own["weights"])]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(next((tmp_path / "dist").glob("*.zip"))) as archive:
        metadata = json.loads(archive.read(f"{OWN_BUNDLE}/configs/metadata.json"))
    pred, image = metadata["network_data_format"]["outputs"]["pred"], metadata["network_data_format"]["inputs"]["image"]
    assert pred["channel_def"] == {"0": "background", "1": "zone a", "2": "zone b", "3": "zone c"} and pred["num_channels"] == 4
    assert image["channel_def"] == {"0": "T2", "1": "ADC"} and image["num_channels"] == 2
    assert "zone a, zone b, zone c" in metadata["intended_use"] and "zone a" in metadata["label_classes"]
