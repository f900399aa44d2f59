"""Datalists: Decathlon ``dataset.json`` or ``imagesTr/`` + ``labelsTr/``, checked before use."""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai.data import load_decathlon_datalist

from common.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NO_DATA_HINT = "run `make data` for the demo data set, or pass --dataset_dir <folder with dataset.json>"


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def _folder_datalist(dataset_dir: Path, section: str) -> list[dict]:
    """Pairs of ``imagesTr/X`` and ``labelsTr/X``; the last fifth (at least one) validates."""
    images = sorted(p for p in (dataset_dir / "imagesTr").iterdir() if _is_nifti(p))
    items = [{"image": str(p), "label": str(dataset_dir / "labelsTr" / p.name)} for p in images]
    n_val = max(1, len(items) // 5)
    if section == "training":
        return items[:-n_val] or items
    if section in ("validation", "test"):
        return items[-n_val:]
    raise InputError(f"{dataset_dir}: a folder datalist has no section '{section}'")


def load_datalist(
    datalist: str | os.PathLike, section: str, dataset_dir: str | os.PathLike, keys: tuple[str, ...] = ("image", "label")
) -> list[dict]:
    """Items of ``section`` with absolute paths; every file named under ``keys`` must exist.

    Args:
        datalist: a Decathlon-style JSON; when it does not exist, ``dataset_dir`` is read as
            ``imagesTr/`` + ``labelsTr/``.
        section: ``"training"``, ``"validation"`` or ``"test"``.
        dataset_dir: folder the relative paths of the datalist start from.
        keys: keys every item must have, pointing at existing files.

    Raises:
        InputError: no data, an empty section, an item without a key, or a missing file.
    """
    datalist, dataset_dir = Path(datalist), Path(dataset_dir)
    if datalist.is_file():
        try:
            items = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key=section, base_dir=dataset_dir)
        except (ValueError, KeyError) as err:
            raise InputError(f"{datalist}: no usable '{section}' section ({err})") from err
        source = datalist
    elif (dataset_dir / "imagesTr").is_dir():
        items, source = _folder_datalist(dataset_dir, section), dataset_dir
    else:
        raise InputError(f"{datalist}: no datalist there; {NO_DATA_HINT}")
    if not items:
        raise InputError(f"{source}: section '{section}' lists no items")
    for index, item in enumerate(items):
        for key in keys:
            if key not in item:
                raise InputError(f"{source}: item {index} of '{section}' has no '{key}'")
            if not Path(item[key]).is_file():
                raise InputError(f"{item[key]}: file not found (the '{key}' of item {index} of '{section}' in {source})")
    return items


def inference_items(input_dir: str | os.PathLike | None, datalist: str | os.PathLike, dataset_dir: str | os.PathLike) -> list[dict]:
    """``{"image": path}`` for every NIfTI in ``input_dir``; without one, the images of the
    datalist's ``test`` section, or of ``validation`` when it has none."""
    if input_dir is not None:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise InputError(f"{folder}: input folder not found")
        images = sorted(p for p in folder.iterdir() if _is_nifti(p))
        if not images:
            raise InputError(f"{folder}: no NIfTI files (*.nii, *.nii.gz) in the input folder")
        return [{"image": str(p)} for p in images]
    datalist = Path(datalist)
    has_test = datalist.is_file() and bool(json.loads(datalist.read_text()).get("test"))
    section = "test" if has_test else "validation"
    return [{"image": item["image"]} for item in load_datalist(datalist, section, dataset_dir, keys=("image",))]
