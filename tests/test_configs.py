"""The bundles' configs, ``metadata.json`` and model cards are generated from ``configs/shared``,
``configs/networks`` and ``CHANGELOG.md`` (``make configs``)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from conftest import BUNDLE_NAMES, REPO_ROOT


def load_generator():
    spec = importlib.util.spec_from_file_location("configs_generate", REPO_ROOT / "configs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The generator working on a copy of the templates and of every bundle's configs."""
    module = load_generator()
    shutil.copytree(module.SHARED, tmp_path / "shared")
    for bundle in BUNDLE_NAMES:
        for part in ("configs", "docs"):
            shutil.copytree(module.BUNDLES / bundle / part, tmp_path / "bundles" / bundle / part)
    monkeypatch.setattr(module, "SHARED", tmp_path / "shared")
    monkeypatch.setattr(module, "BUNDLES", tmp_path / "bundles")
    return module


def test_committed_configs_are_what_the_generator_writes() -> None:
    generator = load_generator()
    assert generator.bundle_names() == BUNDLE_NAMES
    assert [str(path.relative_to(REPO_ROOT)) for path, _ in generator.stale_files()] == []


def test_a_hand_edited_config_is_found(generator) -> None:
    edited = generator.BUNDLES / "mt_unet" / "configs" / "inference.json"
    edited.write_text(edited.read_text().replace('"overlap": 0.5', '"overlap": 0.25'))
    assert [path for path, _ in generator.stale_files()] == [edited]


def test_class_names_are_written_once(generator) -> None:
    """A change of the classes in the shared ``train.json`` reaches every bundle's training,
    inference defaults and ``metadata.json``."""
    template = generator.SHARED / "train.json"
    config = json.loads(template.read_text())
    config.update(num_classes=3, class_names=["background", "liver", "tumour"])
    template.write_text(json.dumps(config))
    for bundle in BUNDLE_NAMES:
        files = {name: content for name, content in generator.bundle_files(bundle).items() if name.endswith(".json")}
        train, inference, metadata = (json.loads(files[n]) for n in ("configs/train.json", "configs/inference.json", "configs/metadata.json"))
        assert train["class_names"] == ["background", "liver", "tumour"]
        assert inference["class_names"] == "$@trained.get('class_names', ['background', 'liver', 'tumour'])"
        assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "liver", "2": "tumour"}
        assert metadata["label_classes"] == "0: background, 1: liver, 2: tumour"


def test_a_placeholder_left_in_a_template_is_refused(generator) -> None:
    template = generator.SHARED / "demo.json"
    config = json.loads(template.read_text())
    config["val_interval"] = generator.FROM_NETWORK
    template.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"demo.json: template placeholders left at \['val_interval'\]"):
        generator.bundle_files("unetr")


def test_metadata_and_model_cards_are_written_from_sources_only(generator) -> None:
    """Nothing under ``bundles/`` is read back: with every generated file gone, the generator writes
    the same files."""
    expected = dict(generator.generated_files())
    for path in expected:
        path.unlink()
    assert dict(generator.generated_files()) == expected


def test_the_changelog_gives_each_bundle_its_own_entries() -> None:
    generator = load_generator()
    text = "# Changelog\n\n## 0.2.0 (today)\n\n- shared change\n- `msga_net`: its own change\n\nFigures.\n\n- not an entry\n\n## 0.1.0 (before)\n\n- first\n"
    assert generator.changelog("msga_net", text) == {"0.2.0": "shared change; its own change", "0.1.0": "first"}
    assert generator.changelog("unetr", text) == {"0.2.0": "shared change", "0.1.0": "first"}
