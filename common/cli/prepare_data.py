"""The embedded demo data sets, written from files that installed packages ship (no download).

**Brain tissue (MRI), ``data/mni152``.** ``nilearn`` ships the ICBM 2009a symmetric template at 1 mm
(a T1 and grey/white-matter probability maps, stored as uint8 0-255). We resample them to
``spacing`` mm and label each voxel:

- brain = fill-holes(closing(GM + WM > 0.2)); outside the brain: 0 (background);
- 2 (grey matter) where GM >= WM and GM > 0.5; 3 (white matter) where WM > GM and WM > 0.5;
- 1 (CSF): the rest of the brain (ventricles, sulci, partial volume at the brain's edge).

The volume is split at x = 0 mm into its two hemispheres, each its own NIfTI with its own affine:
the left one trains, the right one validates, so no validation voxel is seen in training. The
template is *symmetric*: the right hemisphere is close to a mirror image of the left one, so the
validation Dice measures generalisation to mirrored anatomy, not to another subject.

**Vertebrae (CT), ``data/vertebrae_ct``.** ``tptbox`` ships a real lumbar CT (1.5 mm, L2 to L4)
with vertebra and vertebra-subregion masks. See :func:`build_vertebrae_dataset` and
``docs/data.md`` for its classes and split.
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

VERTEBRA_LABELS = {"0": "background", "1": "vertebral body", "2": "vertebral arch", "3": "vertebral processes"}
# TPTBox's subregion values (TPTBox.core.vert_constants.Location) grouped into those classes
SUBREGION_GROUPS = {
    1: (49, 50),  # Vertebra_Corpus_border, Vertebra_Corpus
    2: (41,),  # Arcus_Vertebrae: pedicles and laminae
    3: (42, 43, 44, 45, 46, 47, 48),  # Spinosus_Process, Costal_Process L/R, Superior and Inferior_Articular L/R
}
_LUMBAR_NAMES = {20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5", 25: "L6"}
_SAMPLE_CT = "sub-ct_label-22_ct.nii.gz"
_SAMPLE_VERTEBRAE = "sub-ct_seg-vert_label-22_msk.nii.gz"
_SAMPLE_SUBREGIONS = "sub-ct_seg-subreg_label-22_msk.nii.gz"
CROP_MARGIN = 4  # voxels kept on each side of a training vertebra along the spine


def package_dir(package: str, hint: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{hint} comes from the {package} package: `pip install -r requirements.txt`.")
    return Path(spec.origin).parent


def _load_resampled(name: str, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """One template map (``t1``, ``gm`` or ``wm``) resampled to ``spacing`` mm: array and affine."""
    path = package_dir("nilearn", "the brain demo data") / "datasets" / "data" / _TEMPLATE.format(name)
    image = nib.load(path)
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


def _crop(array: np.ndarray, affine: np.ndarray, axis: int, start: int, stop: int) -> nib.Nifti1Image:
    """Voxels ``start:stop`` of ``array`` along ``axis``, with the affine of that crop."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    offset = np.zeros(3)
    offset[axis] = start
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    return nib.Nifti1Image(array[tuple(index)], shifted)


def _write_dataset(output_dir: Path, cases: dict[str, tuple[nib.Nifti1Image, nib.Nifti1Image]], description: dict) -> Path:
    """Write ``imagesTr/<case>.nii.gz``, ``labelsTr/<case>.nii.gz`` and ``dataset.json`` (``description``,
    whose ``sections`` name the cases of ``training``, ``validation`` and ``test`` (images only)) into a staging folder renamed to ``output_dir`` at the end,
    so an interrupted run leaves nothing behind."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        for name, (image, label) in cases.items():
            nib.save(image, staging / "imagesTr" / f"{name}.nii.gz")
            nib.save(label, staging / "labelsTr" / f"{name}.nii.gz")
        item = lambda name, labelled: {"image": f"imagesTr/{name}.nii.gz", **({"label": f"labelsTr/{name}.nii.gz"} if labelled else {})}
        sections = {key: [item(n, key != "test") for n in names] for key, names in description.pop("sections").items()}
        (staging / "dataset.json").write_text(json.dumps({**description, **sections}, indent=2) + "\n")
        staging.chmod(0o755)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def build_mni152_dataset(output_dir: str | os.PathLike = "data/mni152", spacing: float = 2.0) -> Path:
    """Write the brain demo data set (``dataset.json``, ``imagesTr/``, ``labelsTr/``) to ``output_dir``.

    A no-op when ``output_dir/dataset.json`` exists; written atomically (see :func:`_write_dataset`).
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
    halves = {"mni152_left": (0, midline), "mni152_right": (midline, t1.shape[0])}
    cases = {name: (_crop(t1.astype(np.float32), affine, 0, *extent), _crop(labels, affine, 0, *extent))
             for name, extent in halves.items()}
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
        "sections": {"training": ["mni152_left"], "validation": ["mni152_right"], "test": ["mni152_right"]},
    }
    return _write_dataset(output_dir, cases, description)


def subregion_classes(subregions: np.ndarray) -> np.ndarray:
    """The demo's classes (0 background, 1 body, 2 arch, 3 processes) from TPTBox subregion values."""
    classes = np.zeros(subregions.shape, dtype=np.uint8)
    for value, group in SUBREGION_GROUPS.items():
        classes[np.isin(subregions, group)] = value
    return classes


def vertebra_crops(vertebrae: np.ndarray, subregions: np.ndarray, affine: np.ndarray) -> tuple[int, dict[int, tuple[int, int]], int]:
    """Where to cut the scan into one case per vertebra, along the array axis closest to the spine's
    (superior-inferior) direction. The most inferior vertebra is held out: the scan is cut in the
    intervertebral disc above its body (midway between the two bodies), everything beyond is its case,
    and no voxel of it is in a training case. Each other vertebra's case spans that vertebra (all its
    subregions) plus ``CROP_MARGIN`` voxels, on the training side of the cut.

    Returns the axis, ``{vertebra: (start, stop)}`` of every case, and the held-out vertebra.
    """
    axis = int(np.argmax(np.abs(affine[2, :3])))
    present = [int(v) for v in np.unique(vertebrae) if v > 0]
    if len(present) < 2:
        raise RuntimeError(f"the sample CT shows {len(present)} vertebra(e); holding one out needs at least 2")
    extent = lambda mask: (int(np.argwhere(mask)[:, axis].min()), int(np.argwhere(mask)[:, axis].max()))
    bodies = {v: extent((vertebrae == v) & np.isin(subregions, SUBREGION_GROUPS[1])) for v in present}
    superior = np.sign(affine[2, axis])  # +1 when the index grows towards the head
    order = sorted(present, key=lambda v: -superior * sum(bodies[v]))  # head to feet
    held_out, above = order[-1], order[-2]
    first, second = sorted((bodies[above], bodies[held_out]))
    cut = (first[1] + second[0]) // 2 + 1
    size = vertebrae.shape[axis]
    held, train_side = ((cut, size), (0, cut)) if bodies[held_out] == second else ((0, cut), (cut, size))
    crops = {}
    for v in order[:-1]:
        low, high = extent(vertebrae == v)
        crops[v] = (max(train_side[0], low - CROP_MARGIN), min(train_side[1], high + 1 + CROP_MARGIN))
    return axis, {**crops, held_out: held}, held_out


def build_vertebrae_dataset(output_dir: str | os.PathLike = "data/vertebrae_ct") -> Path:
    """Write the CT demo data set to ``output_dir`` (Decathlon layout): the lumbar CT that ``tptbox``
    ships, one case per vertebra (:func:`vertebra_crops`; every vertebra inside a crop keeps its
    labels), labelled background / vertebral body / vertebral arch / vertebral processes
    (:data:`SUBREGION_GROUPS`), intensities in Hounsfield units as shipped. The most inferior
    vertebra validates, the others train. A no-op when ``output_dir/dataset.json`` exists; written
    atomically. Returns ``output_dir``.
    """
    output_dir = Path(output_dir)
    if (output_dir / "dataset.json").is_file():
        return output_dir
    sample = package_dir("TPTBox", "the CT demo data") / "tests" / "sample_ct"
    ct = nib.load(sample / _SAMPLE_CT)
    image = np.asarray(ct.dataobj).astype(np.int16)
    vertebrae = np.asarray(nib.load(sample / _SAMPLE_VERTEBRAE).dataobj)
    subregions = np.asarray(nib.load(sample / _SAMPLE_SUBREGIONS).dataobj)
    axis, crops, held_out = vertebra_crops(vertebrae, subregions, ct.affine)
    classes = subregion_classes(subregions)
    name = lambda v: f"vertebra_{_LUMBAR_NAMES.get(v, v)}"
    cases = {name(v): (_crop(image, ct.affine, axis, *extent), _crop(classes, ct.affine, axis, *extent)) for v, extent in crops.items()}
    description = {
        "name": "TPTBox-lumbar-CT-vertebra-subregions",
        "description": "Lumbar CT (1.5 mm) shipped in the tptbox wheel, one case per vertebra (cropped along the spine), "
        "labelled vertebral body / arch / processes from its subregion mask; the most inferior vertebra validates.",
        "reference": "TPTBox (github.com/Hendrik-code/TPTBox), sample CT with SPINEPS-style vertebra subregion masks",
        "licence": "Apache-2.0 (the tptbox package)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": VERTEBRA_LABELS,
        "numTraining": len(crops) - 1,
        "sections": {"training": [name(v) for v in crops if v != held_out], "validation": [name(held_out)]},
    }
    return _write_dataset(output_dir, cases, description)


def prepare_data(data_dir: str = "data") -> list[str]:
    """Write the embedded demo data sets (no download) under ``data_dir``: ``mni152`` (brain tissue,
    MRI) and ``vertebrae_ct`` (vertebra parts, CT); each a no-op when it exists.

    Args:
        data_dir: folder of the data sets.
    """
    return [str(build_mni152_dataset(Path(data_dir) / "mni152")), str(build_vertebrae_dataset(Path(data_dir) / "vertebrae_ct"))]
