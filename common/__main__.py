"""Command line of the collection: ``python -m common <command> --help``."""

import fire

from common.demo_data import build_mni152_dataset


def prepare_data(output_dir: str = "data/mni152", spacing: float = 2.0) -> str:
    """Write the embedded MNI152 demo data set (no download); a no-op when it exists.

    Args:
        output_dir: folder to write ``dataset.json``, ``imagesTr/`` and ``labelsTr/`` to.
        spacing: voxel size in mm of the written volumes.
    """
    return str(build_mni152_dataset(output_dir, spacing))


if __name__ == "__main__":
    fire.Fire({"prepare_data": prepare_data})
