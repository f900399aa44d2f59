"""The ``unetr`` bundle through the real ``monai.bundle`` entry points, on tiny synthetic data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import BUNDLES, REPO_ROOT, TINY_OVERRIDES, bundle_command, make_dataset, run_bundle, write_volume

BUNDLE = "unetr"
TINY = TINY_OVERRIDES[BUNDLE]


def train_overrides(dataset: Path, out: Path, **extra) -> dict:
    return {**TINY, "dataset_dir": str(dataset), "ckpt_dir": str(out / "models"), "output_dir": str(out / "runs"), **extra}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for one epoch from the repository root; returns its output folder."""
    out = tmp_path_factory.mktemp("trained")
    dataset = make_dataset(out / "data")
    run_bundle(BUNDLE, ["train.json"], train_overrides(dataset, out))
    return out


def test_train_one_epoch_leaves_checkpoints_and_events(trained: Path) -> None:
    best = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert set(best) == {"model", "metadata"}
    assert best["metadata"]["bundle"] == BUNDLE and best["metadata"]["num_classes"] == 4
    last = torch.load(trained / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "checkpointer", "best_checkpoint"} == set(last)
    assert last["trainer"]["iteration"] == last["trainer"]["epoch_length"]  # one epoch
    assert list((trained / "runs").glob("events.out.tfevents.*"))


def test_train_from_inside_the_bundle_on_the_chosen_device(tmp_path: Path, dataset: Path) -> None:
    overrides = train_overrides(dataset, tmp_path, device="cpu")
    run_bundle(BUNDLE, ["train.json"], overrides, cwd=BUNDLES / BUNDLE, config_dir=Path("configs"))
    assert (tmp_path / "models" / "model.pt").is_file()


def test_interrupted_training_resumes_to_the_right_epoch(tmp_path: Path, dataset: Path) -> None:
    overrides = train_overrides(dataset, tmp_path, max_epochs=3, val_interval=3)
    process = subprocess.Popen(bundle_command(BUNDLE, ["train.json"], overrides), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "models").glob("checkpoint_epoch=*.pt")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = max(int(re.search(r"=(\d+)", p.name).group(1)) for p in (tmp_path / "models").glob("checkpoint_epoch=*.pt"))
    if saved == 3:
        pytest.skip("training finished before it could be interrupted")
    resumed = run_bundle(BUNDLE, ["train.json"], {**overrides, "resume": True})
    epochs_run = re.findall(r"Epoch: (\d+)/3", resumed.stdout)
    assert sorted(set(map(int, epochs_run))) == list(range(saved + 1, 4))
    # two rolling checkpoints, so that one complete checkpoint exists while the next is written
    assert sorted(p.name for p in (tmp_path / "models").glob("*.pt")) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt", "model.pt"]


def test_resume_without_checkpoint_says_so(tmp_path: Path, dataset: Path) -> None:
    result = run_bundle(BUNDLE, ["train.json"], train_overrides(dataset, tmp_path, resume=True), check=False)
    assert result.returncode != 0
    assert "no checkpoint_epoch=N.pt to resume from" in result.stderr.strip().splitlines()[-1]


def test_evaluate_writes_metrics(trained: Path) -> None:
    overrides = {**train_overrides(trained / "data", trained), "output_dir": str(trained / "eval")}
    result = run_bundle(BUNDLE, ["train.json", "evaluate.json"], overrides)
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert set(metrics["dice"]) == {"CSF", "grey matter", "white matter"} == set(metrics["hd95_mm"])
    assert 0.0 <= metrics["mean_dice"] <= 1.0 and metrics["num_images"] == 1
    assert "mean (foreground)" in result.stdout


def test_inference_keeps_the_input_grid(trained: Path, tmp_path: Path) -> None:
    """An oblique, LPS-oriented, 1.5 mm input comes back on its own grid and affine."""
    affine = np.array([[-1.5, 0.0, 0.1, 30.0], [0.0, -1.5, 0.0, 20.0], [0.0, 0.0, 1.5, -10.0], [0, 0, 0, 1]])
    source = nib.load(trained / "data" / "imagesTr" / "case1.nii.gz").get_fdata().astype(np.float32)[:, :30]
    image = write_volume(tmp_path / "in" / "scan.nii.gz", source, affine)
    overrides = {key: TINY[key] for key in ("roi_size", "feature_size", "hidden_size", "mlp_dim", "num_heads", "sw_batch_size", "num_workers")}
    overrides.update(input_dir=str(image.parent), output_dir=str(tmp_path / "out"), ckpt_path=str(trained / "models" / "model.pt"))
    run_bundle(BUNDLE, ["inference.json"], overrides)
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["scan_seg.nii.gz"]
    segmentation = nib.load(written[0])
    assert segmentation.shape == source.shape
    np.testing.assert_allclose(segmentation.affine, affine, atol=1e-4)
    assert set(np.unique(np.asarray(segmentation.dataobj))) <= {0, 1, 2, 3}


def test_inference_accepts_a_monai_unetr_checkpoint(trained: Path, tmp_path: Path) -> None:
    """Weights of ``monai.networks.nets.UNETR`` load strictly through the bundle's own loader."""
    from monai.networks.nets import UNETR as MonaiUNETR

    sizes = {key: TINY[key] for key in ("feature_size", "hidden_size", "mlp_dim", "num_heads")}
    checkpoint = tmp_path / "monai_unetr.pt"
    torch.save(MonaiUNETR(1, 4, TINY["roi_size"], **sizes).state_dict(), checkpoint)
    overrides = {"roi_size": TINY["roi_size"], **sizes, "num_workers": 0, "ckpt_path": str(checkpoint),
                 "input_dir": str(trained / "data" / "imagesTr"), "output_dir": str(tmp_path / "out")}
    run_bundle(BUNDLE, ["inference.json"], overrides)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case0_seg.nii.gz", "case1_seg.nii.gz"]


def test_verify_net_in_out() -> None:
    command = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
               "--config_file", "configs/inference.json", "--roi_size", "[32, 32, 32]", "--hidden_size", "32",
               "--mlp_dim", "64", "--num_heads", "2", "--feature_size", "4", "--_meta_#network_data_format#inputs#image#spatial_shape",
               "[32, 32, 32]", "--_meta_#network_data_format#outputs#pred#spatial_shape", "[32, 32, 32]"]
    result = subprocess.run(command, cwd=BUNDLES / BUNDLE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in (result.stdout + result.stderr)


def test_metadata_follows_the_model_zoo_schema() -> None:
    schema = REPO_ROOT / "tests" / "data" / "meta_schema_20240725.json"
    command = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
               "--filepath", str(schema), "--hash_val", "981adcfadb0821ce0dffc1db1d07ae40a1f99b339a5910295475dd55f3ea6de8", "--hash_type", "sha256"]
    result = subprocess.run(command, cwd=BUNDLES / BUNDLE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "metadata is verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]


def test_multi_gpu_config_runs_two_gloo_processes(tmp_path: Path, dataset: Path) -> None:
    configs = str([str(BUNDLES / BUNDLE / "configs" / name) for name in ("train.json", "multi_gpu_train.json")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "monai.bundle", "run", "--config_file", configs]
    for key, value in train_overrides(dataset, tmp_path).items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert torch.load(tmp_path / "models" / "model.pt", weights_only=True)["model"]
    assert not any(key.startswith("module.") for key in torch.load(tmp_path / "models" / "model.pt", weights_only=True)["model"])


def test_configs_agree_on_network_and_preprocessing() -> None:
    """train.json and inference.json must build the same network and image pre-processing."""
    configs = BUNDLES / BUNDLE / "configs"
    train, infer = (json.loads((configs / name).read_text()) for name in ("train.json", "inference.json"))
    assert train["network_def"] == infer["network_def"]
    for key in ("in_channels", "num_classes", "spacing", "roi_size", "feature_size", "hidden_size", "mlp_dim", "num_heads"):
        assert train[key] == infer[key], key
    strip = lambda t: {k: v for k, v in t.items() if k not in ("keys", "mode", "label_key")}
    assert [strip(t) for t in train["load_transforms"]] == [strip(t) for t in infer["preprocessing"]["transforms"]]


@pytest.mark.parametrize("config, workflow_type", [("train.json", "train"), ("inference.json", "infer")])
def test_bundle_has_every_monai_workflow_property(
    config: str, workflow_type: str, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What MONAI Label and ``monai.bundle`` tools look up in a train or inference config."""
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(BUNDLES / BUNDLE)
    monkeypatch.syspath_prepend(str(BUNDLES / BUNDLE))  # as `monai.bundle run` and MONAI Label do
    workflow = ConfigWorkflow(config_file=f"configs/{config}", meta_file="configs/metadata.json", logging_file=False,
                              workflow_type=workflow_type, dataset_dir=str(dataset))
    workflow.initialize()
    assert workflow.check_properties() == []
