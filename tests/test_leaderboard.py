"""The leaderboard's pieces: table and plots on a fake result set, the baselines' configs, and one
tiny entry through the real runner, twice (same seed, same Dice). The full run is a benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import BUNDLES, REPO_ROOT, make_dataset

sys.path.insert(0, str(REPO_ROOT / "bench"))
import leaderboard  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = ("CSF", "grey matter", "white matter")


def fake_row(name: str, mean_dice: float, attention: bool, seed: int = 0) -> dict:
    return {"name": name, "attention": attention, "mean_dice": mean_dice, "dice": dict(zip(CLASSES, (0.6, 0.9, None))),
            "hd95_mm": dict(zip(CLASSES, (4.0, 2.0, None))), "train_s": 125.0, "infer_s": 12.5, "network_s": 3.25,
            "params": 1.5e6, "gflops": 12.3, "peak_mb": 640.0, "curve": [(2, 0.5), (4, mean_dice)], "seed": seed, "wall_s": 1800.0}


def test_table_and_plots_from_a_fake_result_set(tmp_path: Path) -> None:
    results = [fake_row("MONAI UNet (residual)", 0.81, False), fake_row("attention_unet", 0.88, True)]
    leaderboard.write_table(results, tmp_path / "leaderboard.md", {"roi_size": [64, 64, 64], "seed": 0}, "2026-11-23, x86_64")
    lines = (tmp_path / "leaderboard.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| attention_unet", "| MONAI UNet (residual)"]  # best first
    assert lines[2].startswith("2026-11-23, x86_64. Protocol") and '`roi_size` [64, 64, 64]' in lines[2]
    header = next(line for line in lines if line.startswith("| network"))
    separator = next(line for line in lines if line.startswith("| ---"))
    assert header.count("|") == separator.count("|") == rows[0].count("|")
    assert "**0.880** | 1 | 0.880-0.880 |" in rows[0] and "2 min 05 s" in rows[0] and "| - |" in rows[0]
    assert "2 runs, 1 h 00 min in all" in lines[3] and lines[-1].endswith("(entries of one seed are not compared).")
    leaderboard.plot_tradeoff(results, tmp_path / "leaderboard.png")
    leaderboard.plot_curves("attention_unet", [results[1], fake_row("attention_unet", 0.86, True, seed=1)], tmp_path / "curve.png")
    leaderboard.plot_curves("empty", [{**results[0], "curve": []}], tmp_path / "empty.png")
    for name in ("leaderboard.png", "curve.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_seeds_are_averaged_and_only_gaps_beyond_their_spread_are_claimed(tmp_path: Path) -> None:
    results = [fake_row("unetr", d, True, seed) for seed, d in enumerate((0.90, 0.88, 0.86))]
    results += [fake_row("mt_unet", d, True, seed) for seed, d in enumerate((0.87, 0.89, 0.885))]
    results += [fake_row("MONAI UNet (residual)", d, False, seed) for seed, d in enumerate((0.80, 0.82))]
    results += [fake_row("msga_net", 0.99, True)]  # one seed: never compared
    rows = {row["name"]: row for row in leaderboard.aggregate(results)}
    assert rows["unetr"]["mean_dice"] == pytest.approx(0.88) and rows["unetr"]["dice_range"] == (0.86, 0.90)
    assert rows["unetr"]["seeds"] == [0, 1, 2] and rows["unetr"]["dice"]["white matter"] is None
    assert leaderboard.clearly_ahead(list(rows.values())) == [("mt_unet", "MONAI UNet (residual)"), ("unetr", "MONAI UNet (residual)")]
    leaderboard.write_table(results, tmp_path / "leaderboard.md", {"seed": 0}, "2026-12-01, x86_64")
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| unetr | yes | **0.880** | 3 | 0.860-0.900 |" in text
    assert text.rstrip().endswith("mt_unet > MONAI UNet (residual); unetr > MONAI UNet (residual)")
    leaderboard.plot_tradeoff(results, tmp_path / "leaderboard.png")
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == PNG


def test_a_stopped_run_goes_on_only_under_the_same_protocol(tmp_path: Path) -> None:
    rows = [fake_row("unetr", 0.9, True)]
    protocol = {"roi_size": [64, 64, 64], "seed": 0}
    (tmp_path / "results.json").write_text(json.dumps({"protocol": protocol, "results": rows}))
    assert [r["name"] for r in leaderboard.finished_entries(tmp_path / "results.json", protocol)] == ["unetr"]
    assert leaderboard.finished_entries(tmp_path / "results.json", {**protocol, "seed": 1}) == []
    assert leaderboard.finished_entries(tmp_path / "missing.json", protocol) == []


def test_table_only_writes_the_docs_of_the_runs_so_far_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = {"roi_size": [64, 64, 64], "seed": 0}
    (tmp_path / "protocol.json").write_text(json.dumps(protocol))
    rows = [fake_row("unetr", d, True, seed) for seed, d in enumerate((0.90, 0.88))] + [fake_row("attention_unet", 0.86, True)]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "leaderboard.json").write_text(json.dumps({"protocol": protocol, "results": rows}))
    monkeypatch.setattr(leaderboard, "run_entry", lambda *args: pytest.fail("--table_only ran an entry"))
    monkeypatch.setattr(sys, "argv", ["leaderboard.py", "--protocol", str(tmp_path / "protocol.json"), "--seeds", "0,1,2",
                                      "--work_dir", str(tmp_path / "runs"), "--docs_dir", str(tmp_path / "docs"), "--table_only"])
    leaderboard.main()
    assert "| unetr | yes | **0.890** | 2 | 0.880-0.900 |" in (tmp_path / "docs" / "leaderboard.md").read_text()
    for plot in ("leaderboard.png", "leaderboard/unetr_dice.png", "leaderboard/attention_unet_dice.png"):
        assert (tmp_path / "docs" / plot).read_bytes()[:8] == PNG


@pytest.mark.parametrize("name", list(leaderboard.BASELINES))
def test_baselines_build_through_the_bundle_configs(name: str) -> None:
    """Each baseline's ``network_def`` resolves against the configs it runs through, at the CPU
    protocol's ROI, and maps it to 4-class logits of the same grid."""
    from monai.bundle import ConfigParser

    from common.bundle import use_bundle_scripts

    configs = BUNDLES / leaderboard.BASELINE_CONFIGS / "configs"
    protocol = json.loads((REPO_ROOT / "bench" / "leaderboard_cpu.json").read_text())
    use_bundle_scripts(BUNDLES / leaderboard.BASELINE_CONFIGS)
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "demo.json")])
    parser.update({**protocol, "network_def": leaderboard.BASELINES[name]})
    network = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert network(torch.rand(1, 1, *protocol["roi_size"])).shape == (1, 4, *protocol["roi_size"])


@pytest.mark.slow
def test_one_tiny_entry_runs_end_to_end_and_repeats_its_dice(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    protocol = {"roi_size": [32, 32, 32], "num_samples": 2, "batch_size": 1, "sw_batch_size": 2, "num_workers": 0,
                "seed": 0, "learning_rate": 0.002, "max_epochs": 2, "epoch_length": 2, "val_interval": 1}
    name = "MONAI UNet (residual)"
    first = leaderboard.run_entry(name, protocol, tmp_path / "first", data, tmp_path / "plots")
    assert 0.0 <= first["mean_dice"] <= 1.0 and set(first["dice"]) == set(CLASSES)
    assert first["params"] > 0 and first["gflops"] > 0 and first["network_s"] > 0 and first["peak_mb"] > 0
    assert first["infer_s"] > first["network_s"] and first["train_s"] > 0
    assert [epoch for epoch, _ in first["curve"]] == [1, 2]
    assert (tmp_path / "plots" / "monai_unet_residual_overlay.png").read_bytes()[:8] == PNG
    leftover = tmp_path / "first" / "monai_unet_residual" / "models" / "checkpoint_epoch=9.pt"
    leftover.write_bytes(b"a stopped run's")
    second = leaderboard.run_entry(name, protocol, tmp_path / "first", data, tmp_path / "plots")
    assert round(second["mean_dice"], 3) == round(first["mean_dice"], 3) and not leftover.exists()


def test_swinunetr_runs_at_the_protocol_roi_rounded_to_its_grid_and_the_table_says_so(tmp_path: Path) -> None:
    protocol = {"roi_size": [80, 80, 16], "seed": 0}
    swin = leaderboard.entry_overrides(leaderboard.ENTRIES["MONAI SwinUNETR"], protocol, tmp_path, tmp_path)
    unet = leaderboard.entry_overrides(leaderboard.ENTRIES["MONAI UNet (residual)"], protocol, tmp_path, tmp_path)
    assert swin["roi_size"] == [64, 64, 32] and unet["roi_size"] == [80, 80, 16]
    results = [{**fake_row("MONAI SwinUNETR", 0.8, False), "roi_size": swin["roi_size"]},
               {**fake_row("unetr", 0.85, True), "roi_size": unet["roi_size"]}]
    leaderboard.write_table(results, tmp_path / "leaderboard.md", protocol, "2026-12-01, x86_64")
    text = (tmp_path / "leaderboard.md").read_text()
    assert "Run at another ROI than the protocol's (the network needs a coarser grid): MONAI SwinUNETR [64, 64, 32]." in text


@pytest.mark.slow
def test_retime_measures_every_entry_again_and_the_table_takes_its_costs(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    protocol = {"roi_size": [32, 32, 32], "sw_batch_size": 2, "seed": 0}
    retimed = leaderboard.retime(["attention_unet", "MONAI UNet (residual)"], protocol, tmp_path / "runs", data)
    assert set(retimed["entries"]) == {"attention_unet", "MONAI UNet (residual)"}
    assert all(entry["network_s"] > 0 and entry["peak_mb"] > 0 for entry in retimed["entries"].values())
    results = [fake_row("attention_unet", 0.88, True), fake_row("MONAI UNet (residual)", 0.81, False)]
    leaderboard.write_table(results, tmp_path / "leaderboard.md", protocol, "2026-12-01, x86_64", retimed)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "re-measured for every entry, one after another on one machine" in text
    ours = retimed["entries"]["attention_unet"]
    assert f"| {ours['network_s']:.2f} | {ours['peak_mb']:.0f} |" in next(line for line in text.splitlines() if line.startswith("| attention_unet"))
    leaderboard.plot_tradeoff(results, tmp_path / "leaderboard.png", retimed)
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == PNG


def test_a_new_run_drops_the_retimed_costs_it_is_not_part_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = {"roi_size": [64, 64, 64], "seed": 0}
    (tmp_path / "protocol.json").write_text(json.dumps(protocol))
    (tmp_path / "docs").mkdir()
    retimed = {"machine": "2026-12-01, x86_64", "entries": {"unetr": {"network_s": 1.0, "peak_mb": 500.0}}}
    saved = {"protocol": protocol, "results": [fake_row("unetr", 0.9, True)], "retimed": retimed}
    (tmp_path / "docs" / "leaderboard.json").write_text(json.dumps(saved))
    monkeypatch.setattr(leaderboard, "run_entry", lambda name, protocol, *args: fake_row(name, 0.8, True, protocol["seed"]))
    argv = ["leaderboard.py", "--protocol", str(tmp_path / "protocol.json"), "--only", "unetr",
            "--work_dir", str(tmp_path / "runs"), "--docs_dir", str(tmp_path / "docs")]
    monkeypatch.setattr(sys, "argv", argv + ["--table_only"])
    leaderboard.main()
    assert "re-measured" in (tmp_path / "docs" / "leaderboard.md").read_text()
    monkeypatch.setattr(sys, "argv", argv + ["--seeds", "1"])
    leaderboard.main()
    assert "retimed" not in json.loads((tmp_path / "docs" / "leaderboard.json").read_text())
    assert "re-measured" not in (tmp_path / "docs" / "leaderboard.md").read_text()
