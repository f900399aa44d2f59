"""Data sets on disk: the Medical Segmentation Decathlon layout, the nnU-Net v2 raw layout and a plain
``imagesTr/`` + ``labelsTr/`` folder, read into one description; k-fold splits where a data set has
no validation section; datalists for the bundles' configs, checked before use."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError, first_line
from common.io import write_json

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NO_DATA_HINT = "run `make data` for the demo data sets, or pass --dataset_dir <folder with dataset.json or imagesTr/>"
SPLITS_FILE = "splits.json"
NUM_FOLDS = 5
SPLIT_SEED = 12345  # nnU-Net v2's seed: the same data set gets the same folds as nnU-Net's splits_final.json
CONFIG_SIGILS = ("$", "@", "%")  # a config string starting with one of these is code or a reference to MONAI


@dataclass
class Case:
    """One labelled (or test) case.

    Attributes:
        id: the case identifier (file name without suffix; nnU-Net: without the channel suffix).
        image: the image file, or one file per channel.
        label: the label file; ``None`` for a test case.
    """

    id: str
    image: str | list[str]
    label: str | None = None

    def item(self) -> dict[str, Any]:
        """``{"image": ..., "label": ...}`` as MONAI datalists hold it."""
        return {"image": self.image} if self.label is None else {"image": self.image, "label": self.label}


@dataclass
class DatasetDescription:
    """What a data set folder holds, whatever its layout.

    Attributes:
        root: the data set folder.
        layout: ``"decathlon"``, ``"nnunet"`` or ``"folder"``.
        source: the file (``dataset.json``) or folder the description was read from.
        training: labelled cases of the training section (all labelled cases, unless a validation
            section exists).
        validation: the validation section's cases, ``None`` where the data set has none.
        test: unlabelled cases to segment.
        class_names: label names indexed by label value (background first), ``None`` when the data set
            does not name them.
        channel_names: input channel names (modality), ``None`` when the data set does not name them.
    """

    root: Path
    layout: str
    source: Path
    training: list[Case]
    validation: list[Case] | None = None
    test: list[Case] = field(default_factory=list)
    class_names: list[str] | None = None
    channel_names: list[str] | None = None

    @property
    def labelled(self) -> list[Case]:
        """Every labelled case, training and validation sections alike."""
        return self.training + (self.validation or [])


def _strip_nifti(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _strip_nifti(p.name) and not p.name.startswith(".")) if folder.is_dir() else []


def _safe_names(source: Path, what: str, names: list[str]) -> list[str]:
    """``names`` as given; :class:`InputError` when one is empty or would be read as code by MONAI."""
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{source}: {what} {name!r} is not a name")
        if name.startswith(CONFIG_SIGILS):
            raise InputError(f"{source}: {what} {name!r} starts with {name[0]!r}, which MONAI configs read as code; rename it")
    return names


def _indexed_names(source: Path, what: str, mapping: dict[int, str]) -> list[str]:
    """Names of ``mapping`` (index -> name) as a list; the indices must be ``0 .. n-1``."""
    if sorted(mapping) != list(range(len(mapping))):
        raise InputError(f"{source}: {what} must be numbered 0..{len(mapping) - 1} without gaps, found {sorted(mapping)}")
    return _safe_names(source, what, [mapping[i] for i in range(len(mapping))])


def _decathlon_names(source: Path, section: Any, what: str) -> list[str] | None:
    """``{"0": "background", "1": "liver"}`` as a list of names."""
    if section is None:
        return None
    try:
        return _indexed_names(source, what, {int(k): v for k, v in dict(section).items()})
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: '{what}' must map numbers to names, like {{\"0\": \"background\"}} ({first_line(err)})") from err


def _decathlon_case(source: Path, root: Path, entry: Any, section: str, index: int, labelled: bool) -> Case:
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or "image" not in entry:
        raise InputError(f"{source}: item {index} of '{section}' has no 'image'")
    if labelled and "label" not in entry:
        raise InputError(f"{source}: item {index} of '{section}' has no 'label'")
    resolve = lambda p: os.path.abspath(os.path.join(root, p))
    image = [resolve(p) for p in entry["image"]] if isinstance(entry["image"], list) else resolve(entry["image"])
    first = image[0] if isinstance(image, list) else image
    return Case(_strip_nifti(Path(first).name) or Path(first).stem, image, resolve(entry["label"]) if labelled else None)


def _read_decathlon(datalist: Path, root: Path, description: dict) -> DatasetDescription:
    """The Decathlon ``dataset.json``: ``training`` (and optionally ``validation`` and ``test``) lists,
    ``labels`` as ``{"0": "background", ...}``, ``modality`` as ``{"0": "CT"}``."""
    sections = {}
    for section in ("training", "validation", "test"):
        entries = description.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise InputError(f"{datalist}: '{section}' must be a list of items")
        sections[section] = [_decathlon_case(datalist, root, e, section, i, section != "test") for i, e in enumerate(entries)]
    return DatasetDescription(
        root, "decathlon", datalist, sections["training"], sections.get("validation") or None, sections.get("test", []),
        _decathlon_names(datalist, description.get("labels"), "labels"),
        _decathlon_names(datalist, description.get("modality"), "modality"),
    )


def _read_nnunet(datalist: Path, root: Path, description: dict) -> DatasetDescription:
    """The nnU-Net v2 raw layout: ``imagesTr/<case>_<XXXX><ending>`` (one file per channel),
    ``labelsTr/<case><ending>``, ``dataset.json`` with ``channel_names``, ``labels`` as
    ``{"background": 0, ...}`` and ``file_ending``."""
    labels = description.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(v, int) for v in labels.values()):
        raise InputError(f"{datalist}: nnU-Net 'labels' must map names to integer values (region-based labels are not supported)")
    class_names = _indexed_names(datalist, "labels", {v: k for k, v in labels.items()})
    channels = _decathlon_names(datalist, description.get("channel_names"), "channel_names") or []
    ending = description.get("file_ending", ".nii.gz")
    if ending not in NIFTI_SUFFIXES:
        raise InputError(f"{datalist}: file_ending {ending!r}: only NIfTI ({', '.join(NIFTI_SUFFIXES)}) is read")

    def cases(images: Path, labels_dir: Path | None) -> list[Case]:
        pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
        ids = sorted({m.group(1) for p in images.iterdir() if (m := pattern.match(p.name))}) if images.is_dir() else []
        found = []
        for case in ids:
            files = [images / f"{case}_{c:04d}{ending}" for c in range(len(channels))]
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise InputError(f"{missing[0]}: file not found (channel {files.index(missing[0])} of case {case!r} in {datalist})")
            label = None if labels_dir is None else labels_dir / f"{case}{ending}"
            if label is not None and not label.is_file():
                raise InputError(f"{label}: file not found (the label of case {case!r} in {datalist})")
            image = [str(f) for f in files] if len(files) > 1 else str(files[0])
            found.append(Case(case, image, None if label is None else str(label)))
        return found

    if not channels:
        raise InputError(f"{datalist}: nnU-Net 'channel_names' is empty")
    return DatasetDescription(
        root, "nnunet", datalist, cases(root / "imagesTr", root / "labelsTr"), None,
        cases(root / "imagesTs", None), class_names, channels,
    )


def _read_folder(root: Path) -> DatasetDescription:
    """``imagesTr/X.nii.gz`` with ``labelsTr/X.nii.gz``; ``imagesTs/`` holds test images."""
    training = []
    for image in _nifti_files(root / "imagesTr"):
        label = root / "labelsTr" / image.name
        if not label.is_file():
            raise InputError(f"{label}: file not found (the label of {image})")
        training.append(Case(_strip_nifti(image.name), str(image), str(label)))
    test = [Case(_strip_nifti(p.name), str(p)) for p in _nifti_files(root / "imagesTs")]
    return DatasetDescription(root, "folder", root, training, None, test)


def describe_dataset(dataset_dir: str | os.PathLike, datalist: str | os.PathLike | None = None) -> DatasetDescription:
    """Read the data set at ``dataset_dir`` in whichever layout it has.

    Args:
        dataset_dir: the data set folder; relative paths of a datalist start there.
        datalist: its ``dataset.json`` (default ``dataset_dir/dataset.json``); when it does not
            exist, ``dataset_dir`` is read as a plain ``imagesTr/`` + ``labelsTr/`` folder.

    Raises:
        InputError: no data there, or a malformed ``dataset.json``.
    """
    root = Path(dataset_dir)
    datalist = Path(datalist) if datalist is not None else root / "dataset.json"
    if datalist.is_file():
        try:
            description = json.loads(datalist.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{datalist}: not a readable JSON file ({first_line(err)})") from err
        if not isinstance(description, dict):
            raise InputError(f"{datalist}: expected a JSON object")
        if isinstance(description.get("training"), list):
            found = _read_decathlon(datalist, root, description)
        elif "channel_names" in description:
            found = _read_nnunet(datalist, root, description)
        else:
            raise InputError(f"{datalist}: neither a Decathlon datalist ('training' list) nor an nnU-Net dataset.json ('channel_names')")
    elif (root / "imagesTr").is_dir():
        found = _read_folder(root)
    else:
        raise InputError(f"{datalist}: no datalist there; {NO_DATA_HINT}")
    if not found.training:
        raise InputError(f"{found.source}: no labelled cases")
    return found


def kfold_splits(case_ids: list[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict[str, list[str]]]:
    """``num_folds`` train/validation splits of the sorted ``case_ids``: shuffled with ``seed``, then
    cut into consecutive folds (the first ``n % num_folds`` one case larger), as scikit-learn's
    ``KFold(shuffle=True, random_state=seed)`` does, so nnU-Net v2 gets the same folds."""
    ids = sorted(case_ids)
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)
    sizes = [len(ids) // num_folds + (1 if f < len(ids) % num_folds else 0) for f in range(num_folds)]
    bounds = np.cumsum([0, *sizes])
    splits = []
    for fold in range(num_folds):
        held_out = set(order[bounds[fold] : bounds[fold + 1]].tolist())
        splits.append({"train": [ids[i] for i in range(len(ids)) if i not in held_out], "val": [ids[i] for i in sorted(held_out)]})
    return splits


def dataset_splits(dataset: DatasetDescription) -> list[dict[str, list[str]]]:
    """The folds of a data set without a validation section: ``splits.json`` in its folder when it
    exists (every later run uses the same split), else :func:`kfold_splits` of its cases, written
    there (when the folder is writable).

    Raises:
        InputError: fewer than two labelled cases, or a ``splits.json`` that does not list exactly
            the data set's cases.
    """
    ids = sorted(case.id for case in dataset.training)
    if len(ids) < 2:
        raise InputError(f"{dataset.source}: {len(ids)} labelled case(s); a validation split needs at least 2")
    if len(set(ids)) != len(ids):
        raise InputError(f"{dataset.source}: case ids are not unique: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    path = dataset.root / SPLITS_FILE
    if path.is_file():
        try:
            splits = json.loads(path.read_text())
            listed = sorted(splits[0]["train"] + splits[0]["val"])
        except (OSError, ValueError, LookupError, TypeError) as err:
            raise InputError(f"{path}: not a list of {{'train': [...], 'val': [...]}} folds ({first_line(err)})") from err
        if listed != ids:
            extra, missing = sorted(set(listed) - set(ids)), sorted(set(ids) - set(listed))
            raise InputError(f"{path}: does not match the data set's cases (not in the data: {extra[:5]}, not in the splits: "
                             f"{missing[:5]}); delete it to split again")
        return splits
    splits = kfold_splits(ids, min(NUM_FOLDS, len(ids)))
    try:
        write_json(path, splits)
        logger.info(f"{len(splits)}-fold split of {len(ids)} cases written to {path}")
    except OSError as err:
        logger.warning(f"{path}: cannot write the split ({err.strerror}); it is recomputed the same way on every run")
    return splits


def _check_files(cases: list[Case], source: Path, section: str) -> None:
    for index, case in enumerate(cases):
        for key, files in (("image", case.image), ("label", case.label)):
            for path in [files] if isinstance(files, str) else files or []:
                if not Path(path).is_file():
                    raise InputError(f"{path}: file not found (the '{key}' of item {index} of '{section}' in {source})")


def section_cases(dataset: DatasetDescription, section: str, fold: int = 0) -> list[Case]:
    """The cases of ``section`` (``"training"``, ``"validation"`` or ``"test"``): the data set's own
    sections when it has a validation section, else fold ``fold`` of :func:`dataset_splits`."""
    if section == "test":
        return dataset.test
    if section not in ("training", "validation"):
        raise InputError(f"{dataset.source}: no section '{section}' (training, validation or test)")
    if dataset.validation is not None:
        return dataset.training if section == "training" else dataset.validation
    splits = dataset_splits(dataset)
    if not 0 <= fold < len(splits):
        raise InputError(f"--fold {fold}: {dataset.root / SPLITS_FILE} has folds 0..{len(splits) - 1}")
    chosen = set(splits[fold]["train" if section == "training" else "val"])
    return [case for case in dataset.training if case.id in chosen]


def check_class_names(num_classes: int, class_names: list[str]) -> None:
    """One name per class, background first: :class:`InputError` when ``class_names`` and
    ``num_classes`` disagree."""
    if len(class_names) != num_classes:
        raise InputError(f"class_names: {len(class_names)} names {list(class_names)} for num_classes {num_classes}; "
                         "give one name per class, background first")


def _check_against_config(dataset: DatasetDescription, settings: Mapping[str, Any]) -> None:
    """Refuse a config whose ``class_names`` or ``in_channels`` contradict the data set's own
    description (its ``labels``, and ``modality`` or ``channel_names``)."""
    hint = f"run `python -m common plan --dataset_dir {dataset.root}` and add its plan.json to --config_file"
    class_names = list(settings.get("class_names", dataset.class_names or []))
    if dataset.class_names is not None and dataset.class_names != class_names:
        raise InputError(f"{dataset.source}: labels {dataset.class_names}, the config's class_names {class_names}; {hint}")
    in_channels = settings.get("in_channels")
    if dataset.channel_names is not None and in_channels is not None and len(dataset.channel_names) != in_channels:
        raise InputError(f"{dataset.source}: {len(dataset.channel_names)} input channel(s) {dataset.channel_names}, "
                         f"the config's in_channels {in_channels}; {hint}")


def load_datalist(
    datalist: str | os.PathLike, section: str, dataset_dir: str | os.PathLike, fold: int = 0, settings: Mapping[str, Any] | None = None
) -> list[dict]:
    """Items (``{"image", "label"}``, absolute paths) of ``section`` of the data set, every file checked.

    Args:
        datalist: the data set's ``dataset.json`` (Decathlon or nnU-Net); when it does not exist,
            ``dataset_dir`` is read as ``imagesTr/`` + ``labelsTr/``.
        section: ``"training"``, ``"validation"`` or ``"test"``.
        dataset_dir: the data set folder.
        fold: the fold of the k-fold split, for a data set without a validation section.
        settings: the config's ``class_names`` and ``in_channels`` (its ``trained_with``), refused
            when they contradict the data set's own labels or channels.

    Raises:
        InputError: no data, an empty section, an item without a key, a missing file, or settings
            that contradict the data set.
    """
    dataset = describe_dataset(dataset_dir, datalist)
    _check_against_config(dataset, settings or {})
    cases = section_cases(dataset, section, fold)
    if not cases:
        raise InputError(f"{dataset.source}: section '{section}' lists no items")
    _check_files(cases, dataset.source, section)
    return [case.item() for case in cases]


def inference_items(input_dir: str | os.PathLike | None, datalist: str | os.PathLike, dataset_dir: str | os.PathLike) -> list[dict]:
    """``{"image": path}`` for every NIfTI in ``input_dir``; without one, the data set's test cases,
    or its validation cases (fold 0) when it has none."""
    if input_dir is not None:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise InputError(f"{folder}: input folder not found")
        images = _nifti_files(folder)
        if not images:
            raise InputError(f"{folder}: no NIfTI files (*.nii, *.nii.gz) in the input folder")
        return [{"image": str(p)} for p in images]
    dataset = describe_dataset(dataset_dir, datalist)
    cases = dataset.test or section_cases(dataset, "validation")
    _check_files([Case(c.id, c.image) for c in cases], dataset.source, "test" if dataset.test else "validation")
    return [{"image": case.image} for case in cases]
