"""Every bundle through the real ``monai.bundle`` entry points, on tiny synthetic data: the contract
they all share (same keys, commands, outputs), parametrised over ``bundles/``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import (BUNDLE_NAMES, BUNDLES, REPO_ROOT, build_network, error_line_in_process, make_dataset, network_overrides, run_bundle,
                      subprocess_env, train_overrides, write_volume)

SCHEMA = REPO_ROOT / "tests" / "data" / "meta_schema_20240725.json"
SCHEMA_SHA256 = "981adcfadb0821ce0dffc1db1d07ae40a1f99b339a5910295475dd55f3ea6de8"


def load_config(bundle: str, name: str) -> dict:
    return json.loads((BUNDLES / bundle / "configs" / name).read_text())


def loaded_scripts_modules() -> list[str]:
    """Names of the imported ``scripts`` package and its modules: every bundle has its own, so a
    test that switches bundles in one process must forget the previous one."""
    return [name for name in sys.modules if name == "scripts" or name.startswith("scripts.")]


@pytest.fixture(scope="module", params=[pytest.param(b, marks=pytest.mark.xdist_group(f"bundle_{b}")) for b in BUNDLE_NAMES])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A tiny model of each bundle trained for one epoch, run from inside the bundle folder (its
    configs found as ``configs/...``) on the device given on the command line."""
    bundle = request.param
    out = tmp_path_factory.mktemp(f"trained_{bundle}")
    dataset = make_dataset(out / "data")
    result = run_bundle(bundle, ["train.json"], train_overrides(bundle, dataset, out, device="cpu"), cwd=BUNDLES / bundle,
                        config_dir=Path("configs"))
    (out / "train.log").write_text(result.stdout + result.stderr)
    return bundle, out


def test_train_one_epoch_from_inside_the_bundle_leaves_checkpoints_and_events(trained: tuple[str, Path]) -> None:
    bundle, out = trained
    best = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(best) == {"model", "metadata"}
    assert best["metadata"]["bundle"] == bundle and best["metadata"]["settings"]["num_classes"] == 4
    assert best["metadata"]["settings"]["roi_size"] == [32, 32, 32]  # what a later inference reads back
    last = torch.load(out / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "checkpointer", "best_checkpoint"} == set(last)
    assert last["trainer"]["iteration"] == last["trainer"]["epoch_length"]  # one epoch
    assert list((out / "runs").glob("events.out.tfevents.*"))


def test_evaluate_writes_metrics(trained: tuple[str, Path]) -> None:
    bundle, out = trained
    overrides = {**train_overrides(bundle, out / "data", out), "output_dir": str(out / "eval")}
    result = run_bundle(bundle, ["train.json", "evaluate.json"], overrides)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics["dice"]) == {"CSF", "grey matter", "white matter"} == set(metrics["hd95_mm"])
    assert 0.0 <= metrics["mean_dice"] <= 1.0 and metrics["num_images"] == 1
    assert "mean (foreground)" in result.stdout


def test_inference_keeps_the_input_grid(trained: tuple[str, Path], tmp_path: Path) -> None:
    """An oblique, LPS-oriented, 1.5 mm input comes back on its own grid and affine."""
    bundle, out = trained
    affine = np.array([[-1.5, 0.0, 0.1, 30.0], [0.0, -1.5, 0.0, 20.0], [0.0, 0.0, 1.5, -10.0], [0, 0, 0, 1]])
    source = nib.load(out / "data" / "imagesTr" / "case1.nii.gz").get_fdata().astype(np.float32)[:, :30]
    image = write_volume(tmp_path / "in" / "scan.nii.gz", source, affine)
    overrides = {**network_overrides(bundle), "input_dir": str(image.parent), "output_dir": str(tmp_path / "out"),
                 "ckpt_path": str(out / "models" / "model.pt")}
    run_bundle(bundle, ["inference.json"], overrides)
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["scan_seg.nii.gz"]
    segmentation = nib.load(written[0])
    assert segmentation.shape == source.shape
    np.testing.assert_allclose(segmentation.affine, affine, atol=1e-4)
    assert set(np.unique(np.asarray(segmentation.dataobj))) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_torchscript_and_onnx_exports_match_the_eager_network(trained: tuple[str, Path], tmp_path: Path) -> None:
    """``python -m common export`` refuses an export off by more than 1e-4 from the eager network;
    here both exports are also checked against each other, outside that code."""
    import onnxruntime

    bundle, out = trained
    command = [sys.executable, "-m", "common", "export", "--bundle", str(BUNDLES / bundle),
               "--checkpoint", str(out / "models" / "model.pt"), "--output_dir", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    image = torch.rand(1, 1, *network_overrides(bundle)["roi_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scripted = torch.jit.load(str(tmp_path / "model.ts"))(image).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_output = session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]
    assert scripted.shape == (1, 4, *image.shape[2:])
    np.testing.assert_allclose(onnx_output, scripted, atol=1e-4)


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_checkpoint_of_another_network_is_refused_by_name(bundle: str, tmp_path: Path, dataset: Path) -> None:
    """Weights that do not fit stop inference with one line naming the file, and write nothing."""
    other = BUNDLE_NAMES[(BUNDLE_NAMES.index(bundle) + 1) % len(BUNDLE_NAMES)]
    checkpoint = tmp_path / "other.pt"
    torch.save({"model": build_network(other).state_dict()}, checkpoint)
    overrides = {**network_overrides(bundle), "input_dir": str(dataset / "imagesTr"), "output_dir": str(tmp_path / "out"),
                 "ckpt_path": str(checkpoint)}
    line = error_line_in_process(bundle, ["inference.json"], overrides)
    assert line.startswith(f"error: {checkpoint}: weights do not fit the network"), line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_network_is_batch_independent_and_keeps_the_grid(bundle: str) -> None:
    torch.manual_seed(0)
    network = build_network(bundle)
    x = torch.randn(2, 1, 32, 32, 32)
    changed = x.clone()
    changed[1] = torch.randn_like(changed[1])
    with torch.no_grad():
        out, out_changed = network(x), network(changed)
    assert out.shape == (2, 4, 32, 32, 32)
    torch.testing.assert_close(out[0], out_changed[0])


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_verify_net_in_out(bundle: str, caplog: pytest.LogCaptureFixture) -> None:
    """MONAI's ``verify_net_in_out`` (``python -m monai.bundle verify_net_in_out``), in this process."""
    from monai.bundle import verify_net_in_out

    from common.bundle import use_bundle_scripts

    configs = BUNDLES / bundle / "configs"
    use_bundle_scripts(BUNDLES / bundle)
    shape = {f"_meta_#network_data_format#{section}#spatial_shape": [32, 32, 32] for section in ("inputs#image", "outputs#pred")}
    with caplog.at_level("INFO"):
        verify_net_in_out("network_def", meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
                          **network_overrides(bundle), **shape)
    assert "data shape of network is verified with no error" in caplog.text


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_metadata_follows_the_model_zoo_schema(bundle: str) -> None:
    command = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
               "--filepath", str(SCHEMA), "--hash_val", SCHEMA_SHA256, "--hash_type", "sha256"]
    result = subprocess.run(command, cwd=BUNDLES / bundle, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "metadata is verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]
    metadata = load_config(bundle, "metadata.json")
    assert metadata["name"] == bundle and list(metadata["network_data_format"]["inputs"]) == ["image"]
    assert list(metadata["network_data_format"]["outputs"]) == ["pred"]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["unetr", "nonlocal_unet"])
def test_multi_gpu_config_runs_two_gloo_processes(bundle: str, tmp_path: Path, dataset: Path) -> None:
    configs = str([str(BUNDLES / bundle / "configs" / name) for name in ("train.json", "multi_gpu_train.json")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "monai.bundle", "run", "--config_file", configs]
    for key, value in train_overrides(bundle, dataset, tmp_path).items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    result = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    weights = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["model"]
    assert weights and not any(key.startswith("module.") for key in weights)


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_train_and_inference_build_the_same_network(bundle: str) -> None:
    """Inference takes each setting from the weights, and without weights the value ``train.json`` has."""
    from monai.bundle import ConfigParser

    train, infer = load_config(bundle, "train.json"), load_config(bundle, "inference.json")
    assert train["network_def"] == infer["network_def"] and train["trained_with"] == infer["trained_with"]
    parser = ConfigParser(infer)
    parser.update({"trained": {}})
    for key in train["trained_with"]:
        assert infer[key] == f"$@trained.get({key!r}, {train[key]!r})", key
        assert parser.get_parsed_content(key) == train[key], key
    assert infer["load_transforms"] == train["load_transforms"] and infer["loaded_keys"] == ["image"]


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_demo_overrides_apply_to_every_config(bundle: str, config: str) -> None:
    """``demo.json`` is merged over ``inference.json`` as well (MONAI Label's ``overrides``, the
    leaderboard): each of its keys must exist there, or MONAI's ``update`` stops on a nested key."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(load_config(bundle, config))
    parser.update(load_config(bundle, "demo.json"))
    assert parser.get_parsed_content("roi_size") == load_config(bundle, "demo.json")["roi_size"]


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
@pytest.mark.parametrize("config, workflow_type", [("train.json", "train"), ("inference.json", "infer")])
def test_bundle_has_every_monai_workflow_property(
    bundle: str, config: str, workflow_type: str, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What MONAI Label and ``monai.bundle`` tools look up in a train or inference config."""
    from monai.bundle import ConfigWorkflow

    for name in loaded_scripts_modules():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(BUNDLES / bundle)
    monkeypatch.syspath_prepend(str(BUNDLES / bundle))  # as `monai.bundle run` and MONAI Label do
    workflow = ConfigWorkflow(config_file=f"configs/{config}", meta_file="configs/metadata.json", logging_file=False,
                              workflow_type=workflow_type, dataset_dir=str(dataset))
    workflow.initialize()
    assert workflow.check_properties() == []


def test_attention_unet_has_the_shapes_of_monai_attention_unet() -> None:
    """Same input and output as ``monai.networks.nets.AttentionUnet`` at the same widths."""
    from monai.networks.nets import AttentionUnet

    ours = build_network("attention_unet", feature_size=8)
    monai_net = AttentionUnet(3, 1, 4, channels=(8, 16, 32, 64), strides=(2, 2, 2)).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert ours(x).shape == monai_net(x).shape == (1, 4, 32, 32, 32)


def test_mt_unet_takes_grids_that_are_not_multiples_of_its_window() -> None:
    """Deep grids of 10x14x6 and 5x7x3 voxels with 4^3 windows: padded, attended, cropped back."""
    network = build_network("mt_unet", window_size=4)
    with torch.no_grad():
        assert network(torch.randn(1, 1, 40, 56, 24)).shape == (1, 4, 40, 56, 24)


def test_msga_net_logs_its_loss_terms(trained: tuple[str, Path]) -> None:
    bundle, out = trained
    if bundle != "msga_net":
        pytest.skip("only msga_net has a combined loss")
    terms = re.findall(r"loss terms seg: (\S+) reconstruction: (\S+) guided: (\S+)", (out / "train.log").read_text())
    assert terms and all(np.isfinite(float(value)) for row in terms for value in row)


def test_msga_loss_decreases_over_a_few_steps() -> None:
    """Every term of the combined loss is finite, and the total goes down on a learnable toy task."""
    from common.workflow.losses import GuidedAttentionLoss
    from common.networks import MSGANet

    torch.manual_seed(0)
    network = MSGANet(1, 3, feature_size=4).train()
    loss_function = GuidedAttentionLoss()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    image = torch.randn(2, 1, 16, 16, 16)
    label = (image > 0.5).long() + (image > 1.5).long()
    totals = []
    for _ in range(10):
        loss = loss_function(network(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
        assert set(loss_function.last_terms) == {"seg", "reconstruction", "guided"}
        assert all(np.isfinite(value) for value in loss_function.last_terms.values())
    assert totals[-1] < 0.8 * totals[0]
    network.eval()
    with torch.no_grad():
        assert network(image).shape == (2, 3, 16, 16, 16)  # eval mode: plain logits


def test_msga_masks_match_the_head_on_resampled_maps() -> None:
    """MSGANet's masks (head weights applied before resampling) equal the plain formulation: the
    1x1x1 head on the concatenation of each refined map resampled to full resolution and the
    full-resolution features; odd grids included."""
    from common.networks import MSGANet

    torch.manual_seed(0)
    network = MSGANet(2, 3, feature_size=4).eval()
    for parameter in network.mask_head.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    refined = [torch.randn(2, 8, 5, 6, 7) for _ in range(4)]
    full = torch.randn(2, 4, 10, 12, 13)
    reference = [network.mask_head(torch.cat([F.interpolate(r, size=full.shape[2:], mode="trilinear", align_corners=False), full], 1))
                 for r in refined]
    for mask, expected in zip(network.masks(refined, full), reference):
        torch.testing.assert_close(mask, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
@pytest.mark.parametrize("device, amp", [("cpu", False), (torch.device("cpu"), False), ("cuda:0", True), (torch.device("cuda", 1), True)])
def test_mixed_precision_follows_the_device(bundle: str, device: str | torch.device, amp: bool) -> None:
    """``amp`` is on exactly when the device is a GPU, for the trainer, its validation and inference
    (the configs are parsed, not run: there is no GPU here)."""
    from monai.bundle import ConfigParser

    for name, users in (("train.json", ["train#trainer#amp", "validate#evaluator#amp"]), ("inference.json", ["evaluator#amp"])):
        parser = ConfigParser(load_config(bundle, name))
        parser["device"] = device
        assert [parser[user] for user in users] == ["@amp"] * len(users), name
        assert parser.get_parsed_content("amp") is amp, name
