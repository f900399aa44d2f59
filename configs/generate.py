"""Write every bundle's configs, ``metadata.json`` and model card from one template per shared file and
a small per-bundle part.

``make configs`` runs it. The bundle folders keep their generated files (committed), so each one
still stands alone; ``tests/test_configs.py`` fails when a committed file is not what this writes.
Nothing under ``bundles/`` is read: every output is written from the sources below.

Sources:
- ``configs/shared/``: ``train.json``, ``inference.json``, ``evaluate.json``,
  ``multi_gpu_train.json``, ``logging.conf``, ``demo.json`` and ``metadata.json``, as every bundle
  has them, and ``model_card.md``. The classes, channels, spacing, normalisation and ROI are
  written once, in ``train.json``; its transform chains (loading, normalisation, augmentation,
  post-processing) are MONAI transforms listed in the JSON.
- ``configs/networks/<bundle>.json``: ``sizes`` (the network's own size keys and their defaults),
  ``network_def``, optionally ``loss``, ``demo`` (the CPU demo's sizes, learning rate and
  epochs), ``card`` (the model card's title, ROI multiple and default sizes) and ``metadata``
  (description, references, evaluated Dice).
- ``configs/networks/<bundle>.md``: the model card's own sections (``## intro``, ``## measured``,
  ``## leaderboard``, ``## limits``).
- ``CHANGELOG.md``: each version's bullets, the ``changelog`` of ``metadata.json``.

Rules:
- ``train.json``: the bundle's ``sizes`` follow ``feature_size``; ``network_def`` and ``loss`` are
  the bundle's; ``trained_with`` (what the weights record) gains the size keys; ``augmentation``
  and ``synthesis`` are ``common.transforms.augmentation.DEFAULT_POLICY`` and
  ``common.transforms.synthesis.DEFAULT_SYNTHESIS`` updated with what the template sets.
- ``inference.json``: each key of ``trained_with`` is read from the weights,
  ``$@trained.get(key, <train.json's value>)``, so weights always describe themselves and the
  defaults never drift from training; ``network_def``, ``trained_with`` and the loading chain
  ``load_transforms`` as in ``train.json``.
- ``demo.json``: the template updated with the bundle's ``demo`` part; its ``augmentation`` is the
  whole policy (a partial one would fail to merge over ``inference.json``).
- ``metadata.json``: the template with the bundle's name, description, references and Dice; its
  channel and class definitions, ROI, ``image_classes`` (input contract, spacing, normalisation)
  and ``pred_classes`` follow ``train.json``; ``changelog`` from ``CHANGELOG.md``.
- ``docs/README.md``: ``model_card.md`` with the bundle's sections and facts filled in.
- ``evaluate.json``, ``multi_gpu_train.json``, ``logging.conf``: copied.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

from common.transforms.augmentation import DEFAULT_POLICY
from common.transforms.synthesis import DEFAULT_SYNTHESIS
from common.cli.package import describe_data_format, describe_spacing
from common.transforms.intensity import describe_normalization

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT / "configs" / "shared"
NETWORKS = REPO_ROOT / "configs" / "networks"
BUNDLES = REPO_ROOT / "bundles"
CHANGELOG = REPO_ROOT / "CHANGELOG.md"
COPIED = ("evaluate.json", "multi_gpu_train.json", "logging.conf")
FROM_NETWORK = "<configs/networks/<bundle>.json>"  # template values the per-bundle part replaces
FROM_TRAIN = "<train.json>"  # template values taken from the generated train.json
FROM_CHANGELOG = "<CHANGELOG.md>"
CARD_SECTIONS = ("intro", "measured", "leaderboard", "limits")  # configs/networks/<bundle>.md


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
    config["synthesis"] = {**DEFAULT_SYNTHESIS, **config["synthesis"]}
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


def changelog(bundle: str, text: str) -> dict[str, str]:
    """``{version: its bullets joined by "; "}`` of ``CHANGELOG.md``'s ``## <version> (<date>)``
    sections, newest first: the list that opens each section (what follows it, figures, is not
    read); a bullet starting with a bundle's name in backticks (``- `msga_net`: ...``) counts for
    that bundle only, without the name."""
    versions: dict[str, list[str]] = {}
    bullets: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            bullets = versions.setdefault(line[3:].split(" ")[0], [])
        elif bullets is not None and line.startswith("- "):
            owner, _, rest = line[2:].partition(": ")
            if not (owner.startswith("`") and owner.endswith("`")):
                bullets.append(line[2:])
            elif owner == f"`{bundle}`":
                bullets.append(rest)
        elif line.strip() and bullets:
            bullets = None  # the list is over
    return {version: "; ".join(entries) for version, entries in versions.items()}


def metadata_config(template: dict[str, Any], network: dict[str, Any], train: dict[str, Any], bundle: str,
                    history: str) -> dict[str, Any]:
    """The template with the bundle's name, facts and changelog; ``network_data_format``,
    ``image_classes``, ``label_classes`` and ``pred_classes`` following ``train``."""
    metadata = copy.deepcopy(template)
    facts = network["metadata"]
    metadata.update(name=bundle, description=facts["description"], eval_metrics=facts["eval_metrics"],
                    references=[*facts["references"], *template["references"]], changelog=changelog(bundle, history))
    describe_data_format(metadata, train["channel_names"], train["class_names"], train["roi_size"])
    contract, classes, enclosed = train["input_contract"], train["class_names"], train["enclosed_background_class"]
    metadata["image_classes"] = (
        f"{contract['expects']}; channels: {', '.join(train['channel_names'])}; refused above {contract['max_nonzero_ml']} mL "
        f"of non-zero voxels; resampled to {describe_spacing(train['spacing'])} RAS; {describe_normalization(train['normalization'])}")
    metadata["pred_classes"] = f"{len(classes)} channels: {', '.join(classes)}" + (
        f"; background enclosed by the brain is labelled {classes[enclosed]}" if enclosed is not None else "")
    return metadata


def card_sections(text: str, source: Path) -> dict[str, str]:
    """The ``## <name>`` sections of a bundle's model-card part, each one of :data:`CARD_SECTIONS`."""
    sections = {}
    for part in re.split(r"(?m)^## ", text)[1:]:
        name, _, body = part.partition("\n")
        sections[name.strip()] = body.strip()
    if sorted(sections) != sorted(CARD_SECTIONS):
        raise ValueError(f"{source}: sections {sorted(sections)}, expected {sorted(CARD_SECTIONS)}")
    return sections


def model_card(template: str, bundle: str, network: dict[str, Any], metadata: dict[str, Any]) -> str:
    """``model_card.md`` with ``{{key}}`` filled from the bundle's card facts, sections and metadata."""
    source = NETWORKS / f"{bundle}.md"
    values = {**network["card"], **card_sections(source.read_text(), source), "name": bundle, "version": metadata["version"],
              "references": "\n".join(f"- {reference}" for reference in metadata["references"])}
    card = template
    for key, value in values.items():
        card = card.replace("{{" + key + "}}", value)
    left = sorted(set(re.findall(r"{{(\w+)}}", card)))
    if left:
        raise ValueError(f"{bundle}: model card placeholders left: {left}")
    return card


def placeholders(config: Any, path: str = "") -> list[str]:
    """Key paths of ``config`` still holding a template placeholder."""
    if isinstance(config, dict):
        return [found for key, value in config.items() for found in placeholders(value, f"{path}#{key}" if path else key)]
    if isinstance(config, list):
        return [found for i, value in enumerate(config) for found in placeholders(value, f"{path}#{i}")]
    return [path] if config in (FROM_NETWORK, FROM_TRAIN, FROM_CHANGELOG) else []


def bundle_files(bundle: str) -> dict[str, str]:
    """Every generated file of ``bundle``: path in the bundle folder -> content."""
    network = read_json(NETWORKS / f"{bundle}.json")
    train = train_config(read_json(SHARED / "train.json"), network)
    files = {
        "train.json": train,
        "inference.json": inference_config(read_json(SHARED / "inference.json"), train, network["sizes"]),
        "demo.json": demo_config(read_json(SHARED / "demo.json"), network["demo"]),
        "metadata.json": metadata_config(read_json(SHARED / "metadata.json"), network, train, bundle, CHANGELOG.read_text()),
    }
    for name, config in files.items():
        left = placeholders(config)
        if left:
            raise ValueError(f"{bundle}/configs/{name}: template placeholders left at {left}")
    card = model_card((SHARED / "model_card.md").read_text(), bundle, network, files["metadata.json"])
    return {**{f"configs/{name}": dump(config) for name, config in files.items()},
            **{f"configs/{name}": (SHARED / name).read_text() for name in COPIED}, "docs/README.md": card}


def bundle_names() -> list[str]:
    return sorted(path.stem for path in NETWORKS.glob("*.json"))


def generated_files() -> list[tuple[Path, str]]:
    """Every bundle's generated config file and the content the generator writes there."""
    return [(BUNDLES / b / name, content) for b in bundle_names() for name, content in bundle_files(b).items()]


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
