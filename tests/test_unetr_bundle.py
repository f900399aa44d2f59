"""What only ``unetr`` tests: MONAI UNETR weights load into it; and the resume wiring every bundle
shares (``common.workflow`` checkpoints), exercised once, on ``unetr``."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, TINY_OVERRIDES, bundle_command, error_line_in_process, run_bundle
from conftest import train_overrides as bundle_train_overrides

BUNDLE = "unetr"
TINY = TINY_OVERRIDES[BUNDLE]


def train_overrides(dataset: Path, out: Path, **extra) -> dict:
    return bundle_train_overrides(BUNDLE, dataset, out, **extra)


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_right_epoch_and_no_further(tmp_path: Path, dataset: Path) -> None:
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
    if saved < 3:
        resumed = run_bundle(BUNDLE, ["train.json"], {**overrides, "resume": True})
        epochs_run = re.findall(r"Epoch: (\d+)/3", resumed.stdout)
        assert sorted(set(map(int, epochs_run))) == list(range(saved + 1, 4))
    # two rolling checkpoints, so that one complete checkpoint exists while the next is written
    assert sorted(p.name for p in (tmp_path / "models").glob("*.pt")) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt", "model.pt"]
    beyond = error_line_in_process(BUNDLE, ["train.json"], {**overrides, "max_epochs": 2, "resume": True})
    assert "checkpoint_epoch=3.pt: already trained 3 epochs; pass --max_epochs above that to go on" in beyond
    if saved == 3:
        pytest.skip("training finished before it could be interrupted: the resume itself was not run")


def test_resume_without_checkpoint_says_so(tmp_path: Path, dataset: Path) -> None:
    line = error_line_in_process(BUNDLE, ["train.json"], train_overrides(dataset, tmp_path, resume=True))
    assert "no checkpoint_epoch=N.pt to resume from" in line


def test_inference_accepts_a_monai_unetr_checkpoint(dataset: Path, tmp_path: Path) -> None:
    """Weights of ``monai.networks.nets.UNETR`` load strictly through the bundle's own loader."""
    from monai.networks.nets import UNETR as MonaiUNETR

    sizes = {key: TINY[key] for key in ("feature_size", "hidden_size", "mlp_dim", "num_heads")}
    checkpoint = tmp_path / "monai_unetr.pt"
    torch.save(MonaiUNETR(1, 4, TINY["roi_size"], **sizes).state_dict(), checkpoint)
    overrides = {"roi_size": TINY["roi_size"], **sizes, "num_workers": 0, "ckpt_path": str(checkpoint),
                 "input_dir": str(dataset / "imagesTr"), "output_dir": str(tmp_path / "out")}
    run_bundle(BUNDLE, ["inference.json"], overrides)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case0_seg.nii.gz", "case1_seg.nii.gz"]


