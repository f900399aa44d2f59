"""What ``python -m common segment`` costs a clinician: wall time and peak memory (``/usr/bin/time``)
of each bundle's brain demo weights on the MNI152 brain at 1 mm and at 0.5 mm (nilearn's template,
brain-extracted; the 0.5 mm grid is its bilinear resampling), eager PyTorch, ONNX Runtime (a
copy of the weights exported with ``python -m common export``) and ``auto`` (the two raced on the
first windows, the faster running the rest), the median of ``--repeats`` runs, and the
start-up (importing torch, MONAI and ignite) that every run pays. Then a folder of the 1 mm brain
copied ``--cohort`` times, in one run (start-up paid once), with and without reading the next scan
while the current one's windows run: the wall time of 1, 3 and all scans, the cost of each scan after
the first, and the network's own sliding-window time per scan (from the reports). Needs the weights
of ``make demo BUNDLE=...``.

    python bench/segment_cost.py [--bundles unetr,attention_unet] [--repeats 3] [--backends torch,onnx,auto] [--cohort 10]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from collection import BUNDLES

REPO = Path(__file__).resolve().parent.parent
IMPORTS = "import time; t = time.perf_counter(); import common.cli.segment; print(time.perf_counter() - t)"


def brains(folder: Path) -> dict[str, Path]:
    """The template brain at 1 mm and 0.5 mm, written to ``folder``."""
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    from common.cli.prepare_data import _TEMPLATE, package_dir

    template = nib.load(package_dir("nilearn", "the brain template") / "datasets" / "data" / _TEMPLATE.format("t1"))
    volume = np.asarray(template.dataobj, dtype=np.float32)
    fine = Spacing(pixdim=(0.5, 0.5, 0.5), mode="bilinear")(MetaTensor(volume[None], affine=template.affine))
    scans = {"1 mm": (volume, template.affine), "0.5 mm": (fine[0].numpy(), fine.affine.numpy())}
    paths = {}
    for name, (array, affine) in scans.items():
        paths[name] = folder / f"brain_{name.replace(' ', '').replace('.', '')}.nii.gz"
        nib.save(nib.Nifti1Image(array.astype(np.float32), affine), paths[name])
    return paths


def exported_copy(bundle: str, folder: Path) -> Path:
    """The bundle's demo weights copied into ``folder`` with ``model.onnx`` exported beside them."""
    folder.mkdir(parents=True)
    weights = Path(shutil.copy2(REPO / "bundles" / bundle / "models" / "model.pt", folder / "model.pt"))
    subprocess.run([sys.executable, "-m", "common", "export", str(REPO / "bundles" / bundle), "--checkpoint", str(weights),
                    "--formats", "onnx"], cwd=REPO, capture_output=True, check=True)
    return weights


def timed(bundle: str, weights: Path, backend: str, scan: Path, output: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one ``segment`` run."""
    command = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "common", "segment", "--bundle", str(REPO / "bundles" / bundle),
               "--input", str(scan), "--output", str(output), "--device", "cpu", "--checkpoint", str(weights), "--backend", backend, *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{bundle} on {scan.name}:\n{result.stderr[-2000:]}")
    seconds, kib = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib) / 1024


def listed(value: str | tuple) -> list[str]:
    """A comma-separated flag's items (``fire`` hands ``a,b`` over as a tuple, ``a`` as a string)."""
    return [item for item in (value.split(",") if isinstance(value, str) else value) if item]


def cohort_row(bundle: str, scan: Path, copies: int, folder: Path, read_ahead: bool) -> list[str]:
    """One run of ``segment`` on a folder of 1 and 3 copies of ``scan`` and one of ``copies``: the
    wall times, the cost per scan after the first, the median sliding-window seconds per scan."""
    weights = REPO / "bundles" / bundle / "models" / "model.pt"
    walls, windows = {}, []
    for count in sorted({1, 3, copies}):
        scans = folder / f"{bundle}_{count}_{read_ahead}"
        scans.mkdir(parents=True)
        for index in range(count):
            (scans / f"brain_{index:02d}.nii.gz").symlink_to(scan)
        walls[count], _ = timed(bundle, weights, "torch", scans, scans.with_name(scans.name + "_out"), "--read_ahead", str(read_ahead))
        windows = [json.loads(r.read_text())["timing_s"]["windows"] for r in scans.with_name(scans.name + "_out").glob("*_report.json")]
    after_first = (walls[copies] - walls[1]) / (copies - 1)
    return [f"`{bundle}`", "yes" if read_ahead else "no", f"{walls[1]:.1f} s", f"{walls[3]:.1f} s ({walls[3] / walls[1]:.2f}x)",
            f"{walls[copies]:.1f} s", f"{after_first:.1f} s", f"{statistics.median(windows):.1f} s"]


def main(bundles: str = ",".join(BUNDLES), repeats: int = 3, backends: str = "torch,onnx,auto", cohort: int = 10) -> None:
    started = time.perf_counter()
    wanted = listed(bundles)
    names = [b for b in wanted if (REPO / "bundles" / b / "models" / "model.pt").is_file()]
    if len(names) < len(wanted):
        print(f"skipping {sorted(set(wanted) - set(names))}: no demo weights (make demo BUNDLE=<name>)", file=sys.stderr)
    if not names:
        return
    imports = statistics.median(float(subprocess.run([sys.executable, "-c", IMPORTS], cwd=REPO, capture_output=True, text=True,
                                                     check=True).stdout.split()[-1]) for _ in range(repeats))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scans = brains(Path(scratch))
        shapes = {name: nib.load(path).shape for name, path in scans.items()}
        for bundle in names:
            exported = None
            for backend in listed(backends):
                weights = REPO / "bundles" / bundle / "models" / "model.pt"
                if backend != "torch":
                    exported = exported or exported_copy(bundle, Path(scratch) / f"{bundle}_onnx")
                    weights = exported
                row = [f"`{bundle}`", {"torch": "PyTorch", "onnx": "ONNX Runtime", "auto": "auto (raced)"}[backend]]
                for name, scan in scans.items():
                    runs = [timed(bundle, weights, backend, scan, Path(scratch) / f"{bundle}_{backend}_{i}") for i in range(repeats)]
                    row += [f"{statistics.median(r[0] for r in runs):.1f} s", f"{statistics.median(r[1] for r in runs) / 1024:.2f} GB"]
                row.append(f"{float(row[5][:-3]) / float(row[3][:-3]):.2f}")
                rows.append(row)
                print(" | ".join(row), flush=True)
    print(f"\nsegment, median of {repeats} runs, 2 CPU cores; brain {shapes} voxels; "
          f"start-up (import common.cli.segment: torch, MONAI, ignite) {imports:.1f} s of each run\n")
    print("| bundle | backend | 1 mm wall | 1 mm peak | 0.5 mm wall | 0.5 mm peak | peak 0.5 mm / 1 mm |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    with tempfile.TemporaryDirectory() as scratch:
        one = brains(Path(scratch))["1 mm"]
        cohort_rows = [cohort_row(bundle, one, cohort, Path(scratch), read_ahead) for bundle in names for read_ahead in (True, False)]
    print(f"\nA folder of the 1 mm brain, one segment run (PyTorch), {cohort} copies:\n")
    print(f"| bundle | read ahead | 1 scan | 3 scans | {cohort} scans | each scan after the first | sliding window per scan |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in cohort_rows:
        print("| " + " | ".join(row) + " |")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
