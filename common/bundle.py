"""Opening one bundle folder in this process: its ``scripts`` package, configs and metadata."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from common.errors import InputError


def bundle_folder(bundle: str | Path) -> Path:
    """``bundle`` as an absolute folder that holds ``configs/metadata.json``, or :class:`InputError`."""
    folder = Path(bundle).resolve()
    if not (folder / "configs" / "metadata.json").is_file():
        raise InputError(f"{bundle}: not a bundle folder (no configs/metadata.json)")
    return folder


def use_bundle_scripts(folder: Path) -> None:
    """Make ``import scripts`` find ``folder/scripts`` (each bundle has its own ``scripts`` package,
    so one imported from another bundle is dropped first)."""
    for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
        del sys.modules[name]
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))


def read_metadata(folder: Path) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json``."""
    return json.loads((folder / "configs" / "metadata.json").read_text())


def bundle_workflow(bundle: str | Path, config: str, workflow_type: str, overrides: dict | None = None) -> ConfigWorkflow:
    """A :class:`monai.bundle.ConfigWorkflow` of ``configs/<config>`` of ``bundle`` (metadata and
    ``logging.conf`` included), with ``overrides`` applied, not yet initialised."""
    folder = bundle_folder(bundle)
    use_bundle_scripts(folder)
    configs = folder / "configs"
    return ConfigWorkflow(
        config_file=str(configs / config), meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), workflow_type=workflow_type, **(overrides or {}),
    )
