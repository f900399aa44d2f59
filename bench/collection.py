"""The collection's bundles, as ``configs/networks/`` lists them: the one list every bench script reads."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLES = sorted(path.stem for path in (REPO / "configs" / "networks").glob("*.json"))
