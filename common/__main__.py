"""Command line of the collection: ``python -m common <command> --help``.

Commands: ``segment`` (one scan with one bundle), ``plan`` (fit the bundles to a data set),
``package``, ``verify`` and ``unpack`` (self-contained bundle zips), ``export`` (TorchScript and ONNX),
``prepare_data`` (the embedded demo data sets).
"""

from pathlib import Path

import fire

from common.demo_data import build_mni152_dataset, build_vertebrae_dataset
from common.errors import report_input_errors_briefly
from common.export import export
from common.package import package
from common.plan import plan
from common.segment import segment
from common.verify import unpack, verify


def prepare_data(data_dir: str = "data") -> list[str]:
    """Write the embedded demo data sets (no download) under ``data_dir``: ``mni152`` (brain tissue,
    MRI) and ``vertebrae_ct`` (vertebra parts, CT); each a no-op when it exists.

    Args:
        data_dir: folder of the data sets.
    """
    return [str(build_mni152_dataset(Path(data_dir) / "mni152")), str(build_vertebrae_dataset(Path(data_dir) / "vertebrae_ct"))]


if __name__ == "__main__":
    report_input_errors_briefly()
    fire.Fire({"segment": segment, "plan": plan, "package": package, "verify": verify, "unpack": unpack, "export": export, "prepare_data": prepare_data})
