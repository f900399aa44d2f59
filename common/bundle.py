"""Opening one bundle folder in this process: its ``scripts`` package, configs and metadata."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow

from common.workflow.checkpoints import load_model_weights
from common.errors import InputError, first_line


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


def read_overrides(path: str | Path | None) -> dict[str, Any]:
    """Config keys from a JSON file (e.g. a bundle's ``configs/demo.json``); ``{}`` for ``None``."""
    if path is None:
        return {}
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read config overrides ({first_line(err)})") from err
    if not isinstance(overrides, dict):
        raise InputError(f"{path}: config overrides must be a JSON object of keys, not a {type(overrides).__name__}")
    return overrides


def load_network(bundle: str | Path, weights: Path | None, overrides: dict | None = None) -> tuple[torch.nn.Module, list[int]]:
    """The network ``inference.json`` of ``bundle`` builds for ``weights`` (the sizes they were
    trained with, and ``overrides``), on the CPU in eval mode, with ``weights`` loaded strictly
    (``weights_only``); and its input shape ``(1, in_channels, *roi_size)``. :class:`InputError`
    names ``weights`` when they do not fit. ``weights=None`` leaves the network freshly initialised
    (to time it or count its parameters)."""
    settings = {**(overrides or {}), "device": "cpu"}
    if weights is not None:
        settings["ckpt_path"] = str(Path(weights).resolve())
    parser = bundle_workflow(bundle, "inference.json", "infer", settings).parser
    network = parser.get_parsed_content("network_def")
    if weights is not None:
        network = load_model_weights(network, weights)
    return network.eval(), [1, parser.get_parsed_content("in_channels"), *parser.get_parsed_content("roi_size")]
