"""The public surface of ``common``: what configs and bundle scripts reference resolves, ``import
common`` stays light, and names of earlier versions resolve where they moved or say what replaced them."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from monai.utils.module import locate

import common
from common import surface
from common.errors import InputError
from conftest import BUNDLES, REPO_ROOT, subprocess_env

NAME = re.compile(r"\bcommon(?:\.[A-Za-z_]\w*)+")


def strings(config) -> list[str]:
    """Every string in a parsed JSON config, keys of dicts left out."""
    if isinstance(config, dict):
        return [s for value in config.values() for s in strings(value)]
    if isinstance(config, list):
        return [s for value in config for s in strings(value)]
    return [config] if isinstance(config, str) else []


def referenced_names() -> set[str]:
    """Every ``common.`` name in the bundles' configs (``_target_`` and ``$`` expressions) and scripts."""
    found = set()
    for config in BUNDLES.glob("*/configs/*.json"):
        for text in strings(json.loads(config.read_text())):
            if text.startswith("$") or text.startswith("common."):
                found.update(NAME.findall(text))
    for script in BUNDLES.glob("*/scripts/*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("common"):
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_configs_and_scripts_reference_exactly_the_declared_names() -> None:
    assert referenced_names() == set(surface.CONFIG_NAMES)


@pytest.mark.parametrize("name", surface.CONFIG_NAMES)
def test_every_declared_name_resolves_as_monai_and_expressions_find_it(name: str) -> None:
    found = locate(name)  # how MONAI resolves a _target_
    assert found is not None
    head, *rest = name.split(".")[1:]
    via_attributes = getattr(common, head)
    for part in rest:
        via_attributes = getattr(via_attributes, part)  # how a `$common....` expression finds it after `$import common`
    assert via_attributes is found


def test_import_common_loads_neither_monai_nor_torch() -> None:
    code = "import sys, common, common.errors, common.io, common.surface; print(sorted(m for m in ('monai', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("old, new", list(surface.MOVED.items()))
def test_a_name_of_an_earlier_version_resolves_where_it_moved(old: str, new: str) -> None:
    assert locate(old) is surface.resolve(new) is not None


@pytest.mark.parametrize("looked_up, entry", list(surface.REMOVED.items()))
def test_a_removed_factory_says_what_replaced_it_and_in_which_version(looked_up: str, entry: tuple[str, str]) -> None:
    old, _ = entry
    with pytest.raises(InputError, match=rf"^{re.escape(old)}: removed in attention-bundles {re.escape(surface.VERSION)}, where "):
        locate(old)


def test_an_old_config_runs_into_the_message_through_monai(tmp_path: Path) -> None:
    """A 0.3.0-style ``inference.json`` entry stops the bundle run with one line naming the old factory."""
    config = {"imports": ["$import common"], "post": {"_target_": "common.workflow.write_segmentation", "output_dir": str(tmp_path)},
              "run": ["$@post"]}
    (tmp_path / "old.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(tmp_path / "old.json")]
    result = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode != 0
    assert "common.workflow.write_segmentation: removed in attention-bundles 0.4.0" in result.stderr
