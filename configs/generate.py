"""Write every bundle's configs from one template per shared config and a small per-bundle part.

``make configs`` runs it. The bundle folders keep their generated files (committed), so each one
still stands alone; ``tests/test_configs.py`` fails when a committed file is not what this writes.

Sources:
- ``configs/shared/``: ``train.json``, ``inference.json``, ``evaluate.json``,
  ``multi_gpu_train.json``, ``logging.conf`` and ``demo.json``, as every bundle has them. The
  classes, channels, spacing, normalisation and ROI are written once, in ``train.json``.
- ``configs/networks/<bundle>.json``: ``sizes`` (the network's own size keys and their defaults),
  ``network_def``, optionally ``loss``, and ``demo`` (the CPU demo's sizes, learning rate and
  epochs).

Rules:
- ``train.json``: the bundle's ``sizes`` follow ``feature_size``; ``network_def`` and ``loss`` are
  the bundle's; ``trained_with`` (what the weights record) gains the size keys; ``augmentation``
  is ``common.augmentation.DEFAULT_POLICY`` updated with what the template sets.
- ``inference.json``: each key of ``trained_with`` is read from the weights,
  ``$@trained.get(key, <train.json's value>)``, so weights always describe themselves and the
  defaults never drift from training; ``network_def``, ``trained_with`` and the loading chain
  ``load_transforms`` as in ``train.json``.
- ``demo.json``: the template updated with the bundle's ``demo`` part; its ``augmentation`` is the
  whole policy (a partial one would fail to merge over ``inference.json``).
- ``metadata.json``: its channel and class definitions, ROI and ``image_classes`` (input contract,
  spacing, normalisation) follow ``train.json``; the rest is the bundle's own.
- ``evaluate.json``, ``multi_gpu_train.json``, ``logging.conf``: copied.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from common.augmentation import DEFAULT_POLICY
from common.package import describe_data_format, describe_spacing
from common.workflow import describe_normalization

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT / "configs" / "shared"
NETWORKS = REPO_ROOT / "configs" / "networks"
BUNDLES = REPO_ROOT / "bundles"
COPIED = ("evaluate.json", "multi_gpu_train.json", "logging.conf")
FROM_NETWORK = "<configs/networks/<bundle>.json>"  # template values the per-bundle part replaces
FROM_TRAIN = "<train.json>"  # inference template values taken from the generated train.json


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def dump(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=4, ensure_ascii=False) + "\n"


def with_sizes(template: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    """``template`` with ``sizes`` inserted after its ``feature_size`` key."""
    config: dict[str, Any] = {}
    for key, value in template.items():
        config[key] = value
        if key == "feature_size":
            config.update(sizes)
    return config


def train_config(template: dict[str, Any], network: dict[str, Any]) -> dict[str, Any]:
    config = with_sizes(template, network["sizes"])
    config["network_def"] = network["network_def"]
    config["loss"] = network.get("loss", config["loss"])
    config["trained_with"] = {**config["trained_with"], **{key: f"@{key}" for key in network["sizes"]}}
    config["augmentation"] = {**DEFAULT_POLICY, **config["augmentation"]}
    return config


def inference_config(template: dict[str, Any], train: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    config = with_sizes(template, {key: FROM_TRAIN for key in sizes})
    for key in train["trained_with"]:
        config[key] = f"$@trained.get({key!r}, {train[key]!r})"
    config["network_def"] = train["network_def"]
    config["trained_with"] = train["trained_with"]
    config["load_transforms"] = train["load_transforms"]
    return config


def demo_config(template: dict[str, Any], demo: dict[str, Any]) -> dict[str, Any]:
    config = with_sizes({**template, **{k: v for k, v in demo.items() if k in template}},
                        {k: v for k, v in demo.items() if k not in template})
    config["augmentation"] = {**DEFAULT_POLICY, **config["augmentation"]}
    return config


def metadata_config(metadata: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with ``network_data_format``, ``image_classes`` and ``label_classes`` following ``train``."""
    metadata = copy.deepcopy(metadata)
    describe_data_format(metadata, train["channel_names"], train["class_names"], train["roi_size"])
    contract = train["input_contract"]
    metadata["image_classes"] = (
        f"{contract['expects']}; channels: {', '.join(train['channel_names'])}; refused above {contract['max_nonzero_ml']} mL "
        f"of non-zero voxels; resampled to {describe_spacing(train['spacing'])} RAS; {describe_normalization(train['normalization'])}")
    return metadata


def placeholders(config: Any, path: str = "") -> list[str]:
    """Key paths of ``config`` still holding a template placeholder."""
    if isinstance(config, dict):
        return [found for key, value in config.items() for found in placeholders(value, f"{path}#{key}" if path else key)]
    if isinstance(config, list):
        return [found for i, value in enumerate(config) for found in placeholders(value, f"{path}#{i}")]
    return [path] if config in (FROM_NETWORK, FROM_TRAIN) else []


def bundle_files(bundle: str) -> dict[str, str]:
    """Every generated file of ``bundle``: name in ``configs/`` -> content."""
    network = read_json(NETWORKS / f"{bundle}.json")
    train = train_config(read_json(SHARED / "train.json"), network)
    files = {
        "train.json": train,
        "inference.json": inference_config(read_json(SHARED / "inference.json"), train, network["sizes"]),
        "demo.json": demo_config(read_json(SHARED / "demo.json"), network["demo"]),
        "metadata.json": metadata_config(read_json(BUNDLES / bundle / "configs" / "metadata.json"), train),
    }
    for name, config in files.items():
        left = placeholders(config)
        if left:
            raise ValueError(f"{bundle}/configs/{name}: template placeholders left at {left}")
    return {**{name: dump(config) for name, config in files.items()}, **{name: (SHARED / name).read_text() for name in COPIED}}


def bundle_names() -> list[str]:
    return sorted(path.stem for path in NETWORKS.glob("*.json"))


def generated_files() -> list[tuple[Path, str]]:
    """Every bundle's generated config file and the content the generator writes there."""
    return [(BUNDLES / b / "configs" / name, content) for b in bundle_names() for name, content in bundle_files(b).items()]


def stale_files() -> list[tuple[Path, str]]:
    """Committed config files that differ from what the generator writes, with that content."""
    return [(path, content) for path, content in generated_files() if not path.is_file() or path.read_text() != content]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the files that differ; exit 1 if any")
    args = parser.parse_args()
    stale = stale_files()
    for path, content in stale:
        if args.check:
            print(f"{path.relative_to(REPO_ROOT)}: not what configs/generate.py writes (run make configs)")
        else:
            path.write_text(content)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
