"""Command line of the collection: ``python -m common <command> --help``.

Commands: ``segment`` (one scan with one bundle), ``package`` and ``verify`` (self-contained bundle
zips), ``export`` (TorchScript and ONNX), ``prepare_data`` (the embedded demo data set).
"""

import fire

from common.demo_data import build_mni152_dataset
from common.errors import report_input_errors_briefly
from common.export import export
from common.package import package, verify
from common.segment import segment


def prepare_data(output_dir: str = "data/mni152", spacing: float = 2.0) -> str:
    """Write the embedded MNI152 demo data set (no download); a no-op when it exists.

    Args:
        output_dir: folder to write ``dataset.json``, ``imagesTr/`` and ``labelsTr/`` to.
        spacing: voxel size in mm of the written volumes.
    """
    return str(build_mni152_dataset(output_dir, spacing))


if __name__ == "__main__":
    report_input_errors_briefly()
    fire.Fire({"segment": segment, "package": package, "verify": verify, "export": export, "prepare_data": prepare_data})
