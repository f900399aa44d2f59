"""Command line of the collection: ``python -m common <command> --help``.

Commands: ``segment`` (one scan with one bundle), ``plan`` (fit the bundles to a data set),
``package``, ``verify`` and ``unpack`` (self-contained bundle zips), ``export`` (TorchScript and ONNX),
``prepare_data`` (the embedded demo data sets). Only the chosen command's module is imported.
"""

import importlib
import sys

import fire

from common.errors import report_input_errors_briefly

COMMANDS = {  # command: (module, function)
    "segment": ("common.cli.segment", "segment"),
    "plan": ("common.cli.plan", "plan"),
    "package": ("common.cli.package", "package"),
    "verify": ("common.cli.verify", "verify"),
    "unpack": ("common.cli.verify", "unpack"),
    "export": ("common.cli.export", "export"),
    "prepare_data": ("common.cli.prepare_data", "prepare_data"),
}


def main(argv: list[str]) -> None:
    """Run the command named by ``argv[0]`` with the rest of ``argv``."""
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    module, function = COMMANDS[argv[0]]
    fire.Fire(getattr(importlib.import_module(module), function), command=argv[1:], name=argv[0])


if __name__ == "__main__":
    report_input_errors_briefly()
    main(sys.argv[1:])
