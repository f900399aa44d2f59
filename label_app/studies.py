"""A MONAI Label datastore from a Decathlon-style data set: every image a study, every label final.

    python label_app/studies.py --dataset_dir data/mni152 --studies_dir data/label_studies

Files already in the datastore are kept, so labels annotators saved there are never overwritten.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import fire

from common.data import load_datalist


def write_studies(dataset_dir: str, studies_dir: str) -> Path:
    """Copy the images of ``dataset_dir/dataset.json`` (training and validation) into
    ``studies_dir`` and their labels into ``studies_dir/labels/final``, under the image's file name."""
    studies = Path(studies_dir)
    final_labels = studies / "labels" / "final"
    final_labels.mkdir(parents=True, exist_ok=True)
    datalist = Path(dataset_dir) / "dataset.json"
    for section in ("training", "validation"):
        for item in load_datalist(str(datalist), section, dataset_dir):
            name = Path(item["image"]).name
            for source, target in ((item["image"], studies / name), (item["label"], final_labels / name)):
                if not target.exists():
                    shutil.copyfile(source, target)
    return studies


if __name__ == "__main__":
    fire.Fire(write_studies)
