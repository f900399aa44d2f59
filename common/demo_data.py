"""The embedded demo data set: brain tissue of the MNI152 2009 template, shipped inside ``nilearn``.

``nilearn`` ships the ICBM 2009a symmetric template at 1 mm (a T1 and grey/white-matter probability
maps, stored as uint8 0-255). We resample them to ``spacing`` mm and label each voxel:

- brain = fill-holes(closing(GM + WM > 0.2)); outside the brain: 0 (background);
- 2 (grey matter) where GM >= WM and GM > 0.5; 3 (white matter) where WM > GM and WM > 0.5;
- 1 (CSF): the rest of the brain (ventricles, sulci, partial volume at the brain's edge).

The volume is split at x = 0 mm into its two hemispheres, each its own NIfTI with its own affine:
the left one trains, the right one validates, so no validation voxel is seen in training. The
template is *symmetric*: the right hemisphere is close to a mirror image of the left one, so the
validation Dice measures generalisation to mirrored anatomy, not to another subject.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import MetaTensor
from monai.transforms import Spacing
from scipy import ndimage

LABELS = {"0": "background", "1": "CSF", "2": "grey matter", "3": "white matter"}
_TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def nilearn_data_dir() -> Path:
    """Folder of the data files inside the installed ``nilearn`` wheel (nilearn is not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("the demo data comes from the nilearn package: `pip install nilearn` (see requirements.txt).")
    return Path(spec.origin).parent / "datasets" / "data"


def _load_resampled(name: str, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """One template map (``t1``, ``gm`` or ``wm``) resampled to ``spacing`` mm: array and affine."""
    image = nib.load(nilearn_data_dir() / _TEMPLATE.format(name))
    data = MetaTensor(np.asarray(image.dataobj, dtype=np.float32)[None], affine=image.affine)
    resampled = Spacing(pixdim=(spacing,) * 3, mode="bilinear")(data)
    return resampled[0].numpy(), resampled.affine.numpy()


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Label map (0 background, 1 CSF, 2 GM, 3 WM) from GM/WM probability maps in [0, 1]."""
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(gm + wm > 0.2, iterations=2))
    labels = np.zeros(gm.shape, dtype=np.uint8)
    labels[brain] = 1
    labels[brain & (gm >= wm) & (gm > 0.5)] = 2
    labels[brain & (wm > gm) & (wm > 0.5)] = 3
    return labels


def _crop_x(array: np.ndarray, affine: np.ndarray, start: int, stop: int) -> nib.Nifti1Image:
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.array([start, 0, 0]) + affine[:3, 3]
    return nib.Nifti1Image(array[start:stop], shifted)


def build_mni152_dataset(output_dir: str | os.PathLike = "data/mni152", spacing: float = 2.0) -> Path:
    """Write the demo data set (``dataset.json``, ``imagesTr/``, ``labelsTr/``) to ``output_dir``.

    A no-op when ``output_dir/dataset.json`` exists. Files are written to a temporary folder next to
    ``output_dir`` that is renamed into place at the end, so an interrupted run leaves nothing behind.
    Returns ``output_dir``.
    """
    output_dir = Path(output_dir)
    if (output_dir / "dataset.json").is_file():
        return output_dir
    t1, affine = _load_resampled("t1", spacing)
    gm = _load_resampled("gm", spacing)[0] / 255.0
    wm = _load_resampled("wm", spacing)[0] / 255.0
    labels = tissue_labels(gm, wm)
    midline = int(np.ceil(np.linalg.solve(affine, [0.0, 0.0, 0.0, 1.0])[0]))  # first voxel at x >= 0 mm
    halves = {"left": (0, midline), "right": (midline, t1.shape[0])}

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        entries = {}
        for side, (start, stop) in halves.items():
            (staging / "imagesTr").mkdir(exist_ok=True)
            (staging / "labelsTr").mkdir(exist_ok=True)
            name = f"mni152_{side}.nii.gz"
            nib.save(_crop_x(t1.astype(np.float32), affine, start, stop), staging / "imagesTr" / name)
            nib.save(_crop_x(labels, affine, start, stop), staging / "labelsTr" / name)
            entries[side] = {"image": f"imagesTr/{name}", "label": f"labelsTr/{name}"}
        description = {
            "name": "MNI152-2009a-tissue",
            "description": "Brain tissue (CSF/GM/WM) of the MNI152 2009a symmetric template from nilearn, "
            f"at {spacing} mm; left hemisphere for training, right hemisphere for validation.",
            "reference": "Fonov et al., NeuroImage 2011; ICBM 2009a Nonlinear Symmetric template",
            "licence": "see the MNI ICBM152 2009 copyright notice shipped with nilearn",
            "tensorImageSize": "3D",
            "modality": {"0": "T1"},
            "labels": LABELS,
            "spacing_mm": spacing,
            "numTraining": 1,
            "training": [entries["left"]],
            "validation": [entries["right"]],
            "test": [{"image": entries["right"]["image"]}],
        }
        (staging / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
        staging.chmod(0o755)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir
