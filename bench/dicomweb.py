"""Cost of the PACS path: ``python -m common segment`` on one DICOM series read from a local folder
and pulled from a real Orthanc over DICOMweb (with the DICOM SEG stored back), wall time and peak
memory (``/usr/bin/time``), alternated ``--repeats`` times. Needs ``make pacs-install`` and trained
weights (``make demo BUNDLE=...``).

    python bench/dicomweb.py --bundle unetr [--checkpoint path/to/model.pt]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import write_dicom_series  # noqa: E402
from test_pacs import PASSWORD, USER, Orthanc  # noqa: E402

SCAN = REPO / "data" / "mni152" / "imagesTr" / "mni152_right.nii.gz"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of ``python -m common segment args``."""
    command = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "common", "segment", *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    seconds, kib = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib) / 1024


def main(bundle: str = "unetr", checkpoint: str | None = None, repeats: int = 3) -> None:
    weights = checkpoint or str(REPO / "bundles" / bundle / "models" / "model.pt")
    image = nib.load(SCAN)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    volume = volume / volume.max() * 4000
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        study = pydicom.uid.generate_uid()
        write_dicom_series(root / "series", volume, spacing=tuple(float(s) for s in image.header.get_zooms()[:3]), study_uid=study)
        pacs = Orthanc(root / "pacs")
        try:
            pacs.wait()
            pacs.upload(root / "series")
            env = {**os.environ, "DICOMWEB_USERNAME": USER, "DICOMWEB_PASSWORD": PASSWORD}
            runs: dict[str, list[tuple[float, float]]] = {"local folder": [], "DICOMweb, SEG stored back": []}
            for index in range(repeats):
                common = ["--bundle", str(REPO / "bundles" / bundle), "--checkpoint", weights, "--device", "cpu"]
                runs["local folder"].append(timed([*common, "--input", str(root / "series"), "--output", str(root / f"local{index}")], env))
                runs["DICOMweb, SEG stored back"].append(timed([*common, "--input", f"{pacs.url}/dicom-web", "--study", study,
                                                               "--output", str(root / f"remote{index}"), "--upload"], env))
        finally:
            pacs.stop()
    print(f"`segment` with {bundle} on a {volume.shape[2]}-slice series ({volume.shape[0]} x {volume.shape[1]}), {repeats} runs each, median\n")
    print("| input | wall time (s) | peak memory (MiB) |\n| --- | --- | --- |")
    for name, values in runs.items():
        print(f"| {name} | {statistics.median(v[0] for v in values):.1f} | {statistics.median(v[1] for v in values):.0f} |")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
