"""The leaderboard: every bundle, and the MONAI networks a user would pick instead, trained and
evaluated under one protocol on the embedded data.

    python bench/leaderboard.py [--protocol bench/leaderboard_cpu.json] [--only unetr,attention_unet] [--seeds 0,1,2]
    python bench/leaderboard.py --protocol bench/leaderboard_ct.json --dataset_dir data/vertebrae_ct \
        --plan data/vertebrae_ct/plan.json --seeds 0,1,2 \
        --work_dir leaderboard_runs/vertebrae_ct --docs_dir docs/vertebrae_ct   # the CT task, as python -m common plan set it up
    python bench/leaderboard.py [same flags] --table_only   # stopped early: the table of the runs so far
    python bench/leaderboard.py [same flags] --table_only --retime   # runs spread over machines: costs measured again on one

One protocol file (same split, spacing, ROI, crops, seed, optimiser and step budget for everyone)
is merged over each bundle's ``train.json`` and ``demo.json`` (which give only the network's sizes
here). Baselines run through the ``unetr`` bundle's configs with ``network_def`` replaced, so they
share every other piece of the workflow. Each entry is trained with ``monai.bundle run``,
evaluated with its ``evaluate.json``, timed end to end with its ``inference.json``, and measured
alone (parameters, FLOPs, sliding-window seconds, peak memory) in a fresh process. Writes, in
``--docs_dir`` (``docs/<task>/``), ``leaderboard.md``, ``leaderboard.png`` and, per entry, ``leaderboard/<name>_dice.png``
(validation Dice per epoch, a line per seed) and ``<name>_overlay.png`` (the latest run's prediction
next to the reference). Every run's measurements go to ``leaderboard.json`` beside the table: it is
committed with the docs, so the table can be rebuilt from it and a run of many hours goes on where it
stopped, in a later checkout too (weights and logs stay in ``--work_dir``).

With several seeds, each entry's row is the mean over its seeds with their range, and the table says
which entries are ahead of which by more than the seeds' spread (their ranges do not overlap).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection import BUNDLES as COLLECTION  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BUNDLES = REPO / "bundles"
DOCS = REPO / "docs"

BASELINE_CONFIGS = "unetr"  # whose configs the baselines run through (the workflow is the same for all)
BASELINES = {
    "MONAI UNet (residual)": {
        "_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": "@in_channels",
        "out_channels": "@num_classes", "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2,
        "norm": "instance",
    },
    "MONAI SwinUNETR": {
        "_target_": "monai.networks.nets.SwinUNETR", "spatial_dims": 3, "in_channels": "@in_channels",
        "out_channels": "@num_classes", "feature_size": 12,
    },
    "MONAI UNETR": {
        "_target_": "monai.networks.nets.UNETR", "spatial_dims": 3, "in_channels": "@in_channels",
        "out_channels": "@num_classes", "img_size": "@roi_size", "feature_size": "@feature_size",
        "hidden_size": "@hidden_size", "mlp_dim": "@mlp_dim", "num_heads": "@num_heads", "res_block": True,
    },
    "MONAI AttentionUnet": {
        "_target_": "monai.networks.nets.AttentionUnet", "spatial_dims": 3, "in_channels": "@in_channels",
        "out_channels": "@num_classes", "channels": [8, 16, 32, 64], "strides": [2, 2, 2],
    },
}
# A network whose input grid must be divisible by more than the protocol's ROI is (SwinUNETR: 2**5 for
# its five patch-merging stages) runs at the protocol's ROI rounded down to that multiple on each axis
# (at least one multiple), and the table says so.
ROI_MULTIPLE = {"MONAI SwinUNETR": 32}
ENTRIES: dict[str, dict] = {
    **{name: {"bundle": name, "network_def": None} for name in COLLECTION},
    **{name: {"bundle": BASELINE_CONFIGS, "network_def": net, "roi_multiple": ROI_MULTIPLE.get(name, 1)}
       for name, net in BASELINES.items()},
}


def slug(name: str) -> str:
    """File-name form of an entry name."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")


def monai_bundle_run(configs: list[Path], cwd: Path = REPO) -> float:
    """``python -m monai.bundle run`` over ``configs`` (later files override earlier ones); seconds taken."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([str(c) for c in configs])]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def entry_overrides(entry: dict, protocol: dict, work: Path, dataset_dir: Path) -> dict:
    """What every run of an entry merges over its bundle's configs: the protocol, the paths and,
    for a baseline, its ``network_def``."""
    overrides = {**protocol, "dataset_dir": str(dataset_dir), "ckpt_dir": str(work / "models"),
                 "output_dir": str(work / "runs")}
    if entry["network_def"] is not None:
        overrides["network_def"] = entry["network_def"]
    multiple = entry.get("roi_multiple", 1)
    if "roi_size" in protocol and multiple > 1:
        overrides["roi_size"] = [max(multiple, side // multiple * multiple) for side in protocol["roi_size"]]
    return overrides


def network_facts(bundle: str, weights: str | None, overrides: dict, volume_shape: list[int]) -> dict:
    """Run in a fresh process: parameters, FLOPs of one forward at ``roi_size``, seconds of the
    sliding-window pass over a volume of ``volume_shape`` (as ``inference.json`` runs it), and the
    process's peak resident memory. ``weights=None``: freshly initialised weights of the same sizes."""
    import resource

    import torch
    from monai.inferers import SlidingWindowInferer
    from torch.utils.flop_counter import FlopCounterMode

    from common.bundle import load_network

    torch.manual_seed(0)
    network, input_shape = load_network(BUNDLES / bundle, Path(weights) if weights else None, overrides)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.rand(input_shape))
    inferer = SlidingWindowInferer(input_shape[2:], sw_batch_size=overrides.get("sw_batch_size", 4), overlap=0.5, mode="gaussian")
    volume = torch.rand(1, input_shape[1], *volume_shape)
    with torch.no_grad():
        started = time.perf_counter()
        inferer(volume, network)
        seconds = time.perf_counter() - started
    return {"params": sum(p.numel() for p in network.parameters()), "gflops": counter.get_total_flops() / 1e9,
            "network_s": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def isolated_network_facts(*args) -> dict:
    """:func:`network_facts` in a fresh Python process (peak memory is per process)."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import leaderboard; "
            f"print(json.dumps(leaderboard.network_facts(*{args!r})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def entry_network_facts(entry: dict, weights: str | None, overrides: dict, volume_shape: list[int]) -> dict:
    """:func:`isolated_network_facts` of ``entry`` at the sizes of its bundle's ``demo.json`` under ``overrides``."""
    demo = json.loads((BUNDLES / entry["bundle"] / "configs" / "demo.json").read_text())
    return isolated_network_facts(entry["bundle"], weights, {**demo, **overrides}, volume_shape)


def held_out_case(dataset_dir: Path) -> tuple[Path, Path]:
    """Absolute image and label paths of the first validation case of ``dataset_dir/dataset.json``."""
    validation = json.loads((dataset_dir / "dataset.json").read_text())["validation"][0]
    return (dataset_dir / validation["image"]).absolute(), (dataset_dir / validation["label"]).absolute()


def validation_curve(runs_dir: Path, tag: str = "val_mean_dice") -> list[tuple[int, float]]:
    """``(epoch, value)`` of ``tag`` from the TensorBoard event files in ``runs_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(runs_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            points.update({event.step: event.value for event in accumulator.Scalars(tag)})
    return sorted(points.items())


def run_entry(name: str, protocol: dict, work_root: Path, dataset_dir: Path, plots_dir: Path) -> dict:
    """Train, evaluate, infer and measure one entry in a folder emptied first; its row of the
    leaderboard. Its prediction overlay goes to ``plots_dir`` (a later seed's replaces it)."""
    started = time.perf_counter()
    entry = ENTRIES[name]
    configs = BUNDLES / entry["bundle"] / "configs"
    work = work_root / slug(name)
    if work.exists():  # a stopped run's model.pt would be the score to beat (BestWeights keeps the better weights)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    overrides = entry_overrides(entry, protocol, work, dataset_dir)
    (work / "protocol.json").write_text(json.dumps(overrides, indent=2))
    (work / "evaluate_paths.json").write_text(json.dumps({"output_dir": str(work / "eval")}))
    image, label = held_out_case(dataset_dir)
    scans = work / "scans"
    scans.mkdir(exist_ok=True)
    (scans / image.name).unlink(missing_ok=True)
    (scans / image.name).symlink_to(image)
    (work / "infer_paths.json").write_text(json.dumps({"input_dir": str(scans), "output_dir": str(work / "seg"),
                                                        "ckpt_path": str(work / "models" / "model.pt")}))
    base = [configs / "train.json", configs / "demo.json", work / "protocol.json"]
    train_s = monai_bundle_run(base)
    monai_bundle_run(base + [configs / "evaluate.json", work / "evaluate_paths.json"])
    infer_s = monai_bundle_run([configs / "inference.json", configs / "demo.json", work / "protocol.json", work / "infer_paths.json"])
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    import nibabel

    facts = entry_network_facts(entry, str(work / "models" / "model.pt"), overrides, list(nibabel.load(image).shape))
    prediction = next((work / "seg").glob("*_seg.nii.gz"))
    curve = validation_curve(work / "runs")
    names = ["background", *metrics["dice"]]
    plot_prediction(name, image, label, prediction, names, plots_dir / f"{slug(name)}_overlay.png")
    return {"name": name, "attention": entry["network_def"] is None, "mean_dice": metrics["mean_dice"],
            "dice": metrics["dice"], "hd95_mm": metrics["hd95_mm"], "train_s": train_s, "infer_s": infer_s,
            "curve": curve, "seed": protocol.get("seed"), "roi_size": overrides.get("roi_size"),
            "wall_s": time.perf_counter() - started, **facts}


def retime(names: list[str], protocol: dict, work_root: Path, dataset_dir: Path) -> dict:
    """Every entry's network alone measured again, one entry after another on this machine, with
    freshly initialised weights of its sizes (:func:`network_facts`): costs that compare like with like
    when the runs themselves were spread over machines. ``{"machine": ..., "entries": {name: {"network_s",
    "peak_mb"}}}``."""
    import nibabel

    shape = list(nibabel.load(held_out_case(dataset_dir)[0]).shape)
    entries = {}
    for name in names:
        entry = ENTRIES[name]
        facts = entry_network_facts(entry, None, entry_overrides(entry, protocol, work_root / slug(name), dataset_dir), shape)
        entries[name] = {key: facts[key] for key in ("network_s", "peak_mb")}
        print(f"{name}: network alone {facts['network_s']:.2f} s, peak {facts['peak_mb']:.0f} MB (re-timed)", flush=True)
    return {"machine": machine_line(), "entries": entries}


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def aggregate(results: list[dict], retimed: dict | None = None) -> list[dict]:
    """One row per entry: every measurement averaged over its seeds (a class absent from a run is
    skipped), with ``seeds`` and ``dice_range``, the lowest and highest mean Dice of its runs; an
    entry's network-alone seconds and peak memory from ``retimed`` (:func:`retime`) where it has them."""
    rows = []
    for name in dict.fromkeys(r["name"] for r in results):
        runs = [r for r in results if r["name"] == name]
        dice = [r["mean_dice"] for r in runs]
        row = {key: _mean([r[key] for r in runs]) for key in ("mean_dice", "train_s", "infer_s", "network_s", "params", "gflops", "peak_mb")}
        for key in ("dice", "hd95_mm"):
            row[key] = {c: _mean([r[key][c] for r in runs]) for c in runs[0][key]}
        rows.append({**row, **(retimed or {}).get("entries", {}).get(name, {}), "name": name, "attention": runs[0]["attention"],
                     "seeds": [r.get("seed") for r in runs], "dice_range": (min(dice), max(dice))})
    return rows


def clearly_ahead(rows: list[dict]) -> list[tuple[str, str]]:
    """``(a, b)`` for every two entries of at least two seeds each whose every run of ``a`` scored
    above every run of ``b``: a difference the seeds' spread does not cover. Best first."""
    ranked = [r for r in sorted(rows, key=lambda r: -(r["mean_dice"] or 0)) if len(r["seeds"]) >= 2]
    return [(a["name"], b["name"]) for i, a in enumerate(ranked) for b in ranked[i + 1:] if a["dice_range"][0] > b["dice_range"][1]]


def write_table(results: list[dict], path: Path, protocol: dict, machine: str, retimed: dict | None = None) -> None:
    """``docs/<task>/leaderboard.md``: one row per entry (the mean over its seeds), best mean Dice first,
    then the pairs whose difference the seeds' spread does not cover. With ``retimed``
    (:func:`retime`), network-alone seconds and peak memory are its, and the table says so."""
    rows = aggregate(results, retimed)
    classes = list(rows[0]["dice"]) if rows else []
    hours, minutes = divmod(round(sum(r.get("wall_s") or 0 for r in results) / 60), 60)
    lines = [
        "# Leaderboard", "",
        f"{machine}. Protocol (`bench/leaderboard.py`): " + ", ".join(f"`{k}` {json.dumps(v)}" for k, v in protocol.items()) + ".",
        "Mean foreground Dice and per-class Dice / HD95 from each entry's `evaluate.json` on the held-out case; "
        "inference end to end is `inference.json` on that volume (start-up, pre-processing, sliding window, inversion, "
        "writing); network alone is the sliding-window pass over a volume of the same size; peak memory is that "
        "process's resident peak. With several seeds, every figure is the mean over them, and the range is the "
        f"lowest and highest mean Dice of the runs. {len(results)} runs, {hours} h {minutes:02d} min in all."
        + (f" Network alone and peak memory were re-measured for every entry, one after another on one machine "
           f"({retimed['machine']}; `--retime`, freshly initialised weights of each entry's sizes), so they compare "
           "like with like; training and end-to-end times are each run's own, on whichever machine it ran." if retimed else ""), "",
        "| network | attention bundle | mean Dice | seeds | range | " + " | ".join(f"{c} Dice" for c in classes) + " | "
        + " | ".join(f"{c} HD95 mm" for c in classes)
        + " | parameters | GFLOPs (one ROI) | training | inference end to end s | network alone s | peak MB |",
        "| --- " * (11 + 2 * len(classes)) + "|",
    ]
    for row in sorted(rows, key=lambda r: -(r["mean_dice"] or 0)):
        dice = " | ".join(f"{row['dice'][c]:.3f}" if row["dice"][c] is not None else "-" for c in classes)
        hd95 = " | ".join(f"{row['hd95_mm'][c]:.2f}" if row["hd95_mm"][c] is not None else "-" for c in classes)
        low, high = row["dice_range"]
        minutes, seconds = divmod(round(row["train_s"]), 60)
        lines.append(
            f"| {row['name']} | {'yes' if row['attention'] else 'baseline'} | **{row['mean_dice']:.3f}** | {len(row['seeds'])} | "
            f"{low:.3f}-{high:.3f} | {dice} | {hd95} | "
            f"{row['params'] / 1e6:.2f} M | {row['gflops']:.1f} | {minutes} min {seconds:02d} s | {row['infer_s']:.1f} | "
            f"{row['network_s']:.2f} | {row['peak_mb']:.0f} |"
        )
    own_roi = {r["name"]: r["roi_size"] for r in results if r.get("roi_size") not in (None, protocol.get("roi_size"))}
    if own_roi:
        lines += ["", "Run at another ROI than the protocol's (the network needs a coarser grid): "
                  + "; ".join(f"{name} {roi}" for name, roi in own_roi.items()) + "."]
    pairs = clearly_ahead(rows)
    lines += ["", "Ahead by more than the seeds' spread (every run of the first above every run of the second): "
              + ("; ".join(f"{a} > {b}" for a, b in pairs) if pairs else
                 "none; no difference in the table above is larger than what another seed can move (entries of one seed are not compared).")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(results: list[dict], path: Path, retimed: dict | None = None) -> None:
    """``docs/<task>/leaderboard.png``: mean Dice against the network's sliding-window seconds over
    the held-out volume (``retimed``'s where given), one marker per entry (the mean over its seeds, a
    bar over their range), area proportional to its parameters; attention bundles filled, baselines hollow."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 5.5), layout="constrained")
    rows = aggregate(results, retimed)
    largest = max(r["params"] for r in rows)
    for row in rows:
        size = 60 + 900 * row["params"] / largest
        style = {"color": "tab:blue"} if row["attention"] else {"facecolors": "none", "edgecolors": "tab:orange"}
        low, high = row["dice_range"]
        axis.errorbar(row["network_s"], row["mean_dice"], yerr=[[row["mean_dice"] - low], [high - row["mean_dice"]]],
                      fmt="none", ecolor="grey", capsize=3)
        axis.scatter(row["network_s"], row["mean_dice"], s=size, alpha=0.7, **style)
        axis.annotate(row["name"], (row["network_s"], row["mean_dice"]), textcoords="offset points", xytext=(8, 4), fontsize=8)
    axis.set_xlabel("CPU seconds of the network's sliding-window pass over the held-out volume")
    axis.set_ylabel("mean foreground Dice (held-out case)")
    axis.set_title("Dice against network time (marker area: parameters; hollow: MONAI baselines)")
    axis.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_curves(name: str, runs: list[dict], path: Path) -> None:
    """Validation mean Dice per epoch of one entry, a line per run (seed)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for run in sorted(runs, key=lambda r: r.get("seed") or 0):
        if run["curve"]:
            epochs, values = zip(*run["curve"])
            axis.plot(epochs, values, marker="o", label=f"seed {run.get('seed')}")
    if any(run["curve"] for run in runs):
        axis.legend(fontsize=8)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation mean Dice")
    axis.set_ylim(0, 1)
    axis.set_title(name)
    axis.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_prediction(name: str, image: Path, label: Path, prediction: Path, class_names: list[str], path: Path) -> None:
    """One axial slice of the validation volume: the reference beside the prediction, with a
    legend of the foreground ``class_names`` (background first in the list)."""
    import nibabel
    import numpy as np
    from matplotlib.patches import Patch

    plt = _pyplot()
    colours = plt.get_cmap("tab10")
    volume, reference, predicted = (np.asarray(nibabel.load(p).dataobj) for p in (image, label, prediction))
    z = int(np.argwhere(reference > 0)[:, 2].mean()) if (reference > 0).any() else reference.shape[2] // 2
    figure, axes = plt.subplots(1, 2, figsize=(8, 4.5), layout="constrained")
    for axis, labels, title in zip(axes, (reference, predicted), ("reference", f"{name}")):
        axis.imshow(volume[:, :, z].T, cmap="gray", origin="lower")
        axis.imshow(np.ma.masked_equal(labels[:, :, z].T, 0), cmap="tab10", vmin=0, vmax=9, alpha=0.45,
                    origin="lower", interpolation="nearest")
        axis.set_title(f"{title}, axial slice {z}")
        axis.axis("off")
    legend = [Patch(color=colours(i), alpha=0.45, label=n) for i, n in enumerate(class_names) if i > 0]
    figure.legend(handles=legend, loc="outside lower center", ncol=len(legend), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def machine_line() -> str:
    import monai
    import torch

    return (f"{datetime.date.today()}, {platform.machine()} with {os.cpu_count()} cores, torch {torch.__version__}, "
            f"MONAI {monai.__version__}")


def finished_entries(results_path: Path, protocol: dict) -> list[dict]:
    """Runs already measured under ``protocol`` in ``results_path`` (a run of hours on a CPU goes on
    where it stopped); none when the file is missing or was made under another protocol."""
    if not results_path.is_file():
        return []
    saved = json.loads(results_path.read_text())
    return saved["results"] if saved.get("protocol") == protocol else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default=str(Path(__file__).parent / "leaderboard_cpu.json"))
    parser.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entry names")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the protocol's seed)")
    parser.add_argument("--dataset_dir", default=str(REPO / "data" / "mni152"))
    parser.add_argument("--plan", default=None, help="python -m common plan's plan.json, merged under the protocol")
    parser.add_argument("--work_dir", default=str(REPO / "leaderboard_runs" / "mni152"))
    parser.add_argument("--docs_dir", default=str(DOCS / "mni152"), help="where leaderboard.md, leaderboard.png and leaderboard/ go")
    parser.add_argument("--table_only", action="store_true", help="run nothing: the table and plots of the runs measured so far")
    parser.add_argument("--retime", action="store_true",
                        help="re-measure every entry's network alone on this machine (runs spread over machines); "
                             "kept in leaderboard.json until a new run is added")
    args = parser.parse_args()
    docs = Path(args.docs_dir)
    protocol = json.loads(Path(args.protocol).read_text())
    if args.plan:
        protocol = {**json.loads(Path(args.plan).read_text()), **protocol}
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [protocol.get("seed", 0)]
    results_path = docs / "leaderboard.json"
    results = finished_entries(results_path, protocol)
    done = {(row["name"], row.get("seed", protocol.get("seed"))) for row in results}
    for seed in [] if args.table_only else seeds:
        for name in args.only.split(","):
            if (name, seed) in done:
                print(f"{name}, seed {seed}: measured already under this protocol ({results_path})", flush=True)
                continue
            print(f"{name}, seed {seed}: training, evaluating, timing ...", flush=True)
            results.append(run_entry(name, {**protocol, "seed": seed}, Path(args.work_dir) / f"seed_{seed}", Path(args.dataset_dir),
                                     docs / "leaderboard"))
            print(f"{name}, seed {seed}: mean Dice {results[-1]['mean_dice']:.3f}, training {results[-1]['train_s']:.0f} s", flush=True)
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps({"protocol": protocol, "results": results}, indent=2))
    retimed = json.loads(results_path.read_text()).get("retimed") if results_path.is_file() else None
    if args.retime:
        names = list(dict.fromkeys(row["name"] for row in results))
        retimed = retime(names, protocol, Path(args.work_dir) / "retime", Path(args.dataset_dir))
        results_path.write_text(json.dumps({"protocol": protocol, "results": results, "retimed": retimed}, indent=2))
    write_table(results, docs / "leaderboard.md", protocol, machine_line(), retimed)
    plot_tradeoff(results, docs / "leaderboard.png", retimed)
    for name in dict.fromkeys(row["name"] for row in results):
        plot_curves(name, [row for row in results if row["name"] == name], docs / "leaderboard" / f"{slug(name)}_dice.png")
    print((docs / "leaderboard.md").read_text())


if __name__ == "__main__":
    main()
