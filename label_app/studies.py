"""A MONAI Label datastore from a data set (Decathlon, nnU-Net or imagesTr/ + labelsTr/): every
labelled image a study, its label final.

    python label_app/studies.py --dataset_dir data/mni152 --studies_dir data/label_studies

Files already in the datastore are kept, so labels annotators saved there are never overwritten.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import fire

from common.workflow.data import describe_dataset
from common.errors import InputError


def write_studies(dataset_dir: str, studies_dir: str) -> Path:
    """Copy the labelled images of the data set at ``dataset_dir`` into ``studies_dir`` and their
    labels into ``studies_dir/labels/final``, under the image's file name."""
    studies = Path(studies_dir)
    final_labels = studies / "labels" / "final"
    final_labels.mkdir(parents=True, exist_ok=True)
    for case in describe_dataset(dataset_dir).labelled:
        if not isinstance(case.image, str):
            raise InputError(f"{case.image[0]}: case {case.id!r} has one file per channel; a study is one image file")
        name = Path(case.image).name
        for source, target in ((case.image, studies / name), (case.label, final_labels / name)):
            if not target.exists():
                shutil.copyfile(source, target)
    return studies


if __name__ == "__main__":
    fire.Fire(write_studies)
