"""Robustness of the brain demo weights: each bundle's ``inference.json`` on the held-out hemisphere
under controlled shifts of what a scanner does to a scan, mean foreground Dice against the reference
on the shifted scan's grid, the worst of all and the mean of the shifted scans; and, on a scan with a
real T1's contrast (dark CSF), how much of the ventricles comes out as CSF.

    python bench/robustness.py                       # weights of make demo (models/model.pt)
    python bench/robustness.py --variants ",_noaug"  # and those trained without the augmentation policy
    python bench/robustness.py --bundles unetr       # one bundle

Prints a Markdown table, and writes it to ``--output`` when given (docs/robustness.md, written by hand
around such tables, is not overwritten).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import RandBiasField, Spacing
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.bundle import bundle_workflow  # noqa: E402
from common.cli.prepare_data import _load_resampled, tissue_labels  # noqa: E402
from collection import BUNDLES  # noqa: E402
from segment_cost import listed  # noqa: E402

DATA = REPO / "data" / "mni152"
SCAN, LABEL = DATA / "imagesTr" / "mni152_right.nii.gz", DATA / "labelsTr" / "mni152_right.nii.gz"


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), path)
    return path


def _resampled(array: np.ndarray, affine: np.ndarray, spacing: float, mode: str) -> tuple[np.ndarray, np.ndarray]:
    out = Spacing(pixdim=(spacing,) * 3, mode=mode)(MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], affine=torch.as_tensor(affine)))
    return out[0].numpy(), out.affine.numpy()


def real_contrast(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The held-out hemisphere with a real T1's contrast, from the template's tissue maps: white
    matter 1.0, grey matter 0.6, CSF 0.15 (the template's averaging made its CSF grey), times the
    template's white-matter intensity; zero outside the brain, as brain extraction leaves it."""
    gm = _load_resampled("gm", 2.0)[0] / 255.0
    wm = _load_resampled("wm", 2.0)[0] / 255.0
    t1, full_affine = _load_resampled("t1", 2.0)
    start = int(round(np.linalg.solve(full_affine, affine[:, 3])[0]))
    gm, wm = gm[start:start + shape[0]], wm[start:start + shape[0]]
    brain = tissue_labels(gm, wm) > 0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    white = float(np.percentile(t1[start:start + shape[0]][brain], 95))
    return np.where(brain, white * (1.0 * wm + 0.6 * gm + 0.15 * csf), 0.0)


def shifted_scans(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Name -> (scan, reference label on its grid) for every shift."""
    image, affine = np.asarray(nib.load(SCAN).dataobj, dtype=np.float32), nib.load(SCAN).affine
    label = np.asarray(nib.load(LABEL).dataobj)
    brain = image != 0
    top = float(image.max())
    rng = np.random.RandomState(0)
    bias = RandBiasField(coeff_range=(0.3, 0.3), prob=1.0)
    bias.set_random_state(0)
    field = np.asarray(bias(np.ones((1, *image.shape), dtype=np.float32)))[0]
    scans = {
        "none": image,
        "gamma 0.7": top * (image / top) ** 0.7,
        "gamma 1.5": top * (image / top) ** 1.5,
        "bias field": image * field,
        "noise 5%": np.where(brain, image + rng.normal(0, 0.05 * np.percentile(image[brain], 99), image.shape), 0),
        "blur 2 mm": np.where(brain, ndimage.gaussian_filter(image, 1.0), 0),
        "intensity x20 + 100": np.where(brain, image * 20 + 100, 0),
        "real T1 contrast": real_contrast(affine, image.shape),
    }
    found = {name: (_save(folder / f"{i}.nii.gz", array, affine), LABEL) for i, (name, array) in enumerate(scans.items())}
    for spacing, name in ((3.0, "coarser, 3 mm"), (1.0, "finer, 1 mm")):
        array, grid = _resampled(image, affine, spacing, "bilinear")
        reference, _ = _resampled(label.astype(np.float32), affine, spacing, "nearest")
        stem = f"spacing_{int(spacing)}mm"
        found[name] = (_save(folder / f"{stem}.nii.gz", np.where(array > 0.5, array, 0), grid), _save(folder / f"{stem}_label.nii.gz", reference, grid))
    border = 20  # voxels of 2 mm on every side: the same brain in a field of view planned 80 mm wider
    grid = affine.copy()
    grid[:3, 3] -= affine[:3, :3] @ np.full(3, border)
    found["zero border +40 mm"] = (_save(folder / "wide.nii.gz", np.pad(image, border), grid),
                                   _save(folder / "wide_label.nii.gz", np.pad(label, border), grid))
    return found


def ventricles(label: np.ndarray) -> np.ndarray:
    """CSF inside the hole-filled white matter: the lateral ventricles, not the sulci."""
    return (label == 1) & ndimage.binary_fill_holes(ndimage.binary_closing(label == 3, iterations=2))


def segment(bundle: str, weights: Path, scan: Path, output: Path, fill_enclosed: bool = True) -> np.ndarray:
    """``inference.json`` with ``weights`` on ``scan``; ``fill_enclosed=False`` leaves background
    enclosed by the brain as predicted (the post-processing step alone, the weights' settings stay)."""
    overrides = {"ckpt_path": weights, "dataset#data": [{"image": scan}], "output_dir": output, "num_workers": 0, "device": "cpu"}
    if not fill_enclosed:
        chain = json.loads((REPO / "bundles" / bundle / "configs" / "inference.json").read_text())["postprocessing"]["transforms"]
        fill = next(i for i, step in enumerate(chain) if step["_target_"].endswith(".FillEnclosedBackgroundd"))
        overrides[f"postprocessing#transforms#{fill}#_disabled_"] = True
    workflow = bundle_workflow(REPO / "bundles" / bundle, "inference.json", "infer", overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return np.asarray(nib.load(next(output.glob(f"{scan.name.split('.')[0]}_seg.nii.gz"))).dataobj)


def mean_dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    scores = [2 * ((prediction == c) & (reference == c)).sum() / max(1, (prediction == c).sum() + (reference == c).sum()) for c in (1, 2, 3)]
    return float(np.mean(scores))


def main(variants: str = "", output: str | None = None, bundles: str = ",".join(BUNDLES)) -> None:
    """Measure the weights of each ``variants`` (comma-separated sub-folders of ``models/``;
    ``""``: ``models/model.pt``) of each of ``bundles`` (comma-separated)."""
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scans = shifted_scans(Path(scratch))
        reference_ventricles = ventricles(np.asarray(nib.load(LABEL).dataobj))
        for bundle in listed(bundles):
            for variant in [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants)]:
                weights = REPO / "bundles" / bundle / "models" / variant / "model.pt"
                if not weights.is_file():
                    print(f"skipping {bundle}{variant}: no {weights}", file=sys.stderr)
                    continue
                row = {"bundle": bundle, "variant": variant or "policy", "dice": {}}
                for index, (name, (scan, label)) in enumerate(scans.items()):
                    out = Path(scratch) / f"{bundle}{variant}_{index}"
                    out.mkdir()
                    prediction = segment(bundle, weights, scan, out)
                    row["dice"][name] = mean_dice(prediction, np.asarray(nib.load(label).dataobj))
                    if name == "real T1 contrast":
                        row["ventricles_as_csf"] = float((prediction[reference_ventricles] == 1).mean())
                        unfilled = Path(scratch) / f"{bundle}{variant}_unfilled"
                        unfilled.mkdir()
                        prediction = segment(bundle, weights, scan, unfilled, fill_enclosed=False)
                        row["ventricles_as_csf_unfilled"] = float((prediction[reference_ventricles] == 1).mean())
                rows.append(row)
                print(json.dumps(row), flush=True)
    names = list(scans)
    lines = ["| bundle | weights | " + " | ".join(names) + " | worst | mean of the shifts | ventricles as CSF, real T1 contrast (without the fill) |",
             "| --- " * (len(names) + 5) + "|"]
    for row in rows:
        worst = min(row["dice"].values())
        shifted = np.mean([dice for name, dice in row["dice"].items() if name != "none"])
        lines.append(f"| `{row['bundle']}` | {row['variant']} | " + " | ".join(f"{row['dice'][n]:.3f}" for n in names)
                     + f" | **{worst:.3f}** | {shifted:.3f} | {100 * row['ventricles_as_csf']:.0f} % ({100 * row['ventricles_as_csf_unfilled']:.0f} %) |")
    table = "\n".join(lines)
    print(table)
    print(f"({time.perf_counter() - started:.0f} s)")
    if output:
        Path(output).write_text(table + "\n")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
