"""Writing outputs so that a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from common.surface import lazy_getattr


def _staging_path(final: Path) -> Path:
    """A fresh hidden path beside ``final`` with the same extension (writers pick formats by it;
    ``.nii.gz`` whole, a DICOM UID's dots are not extensions), with the permissions a plain new file
    gets (``mkstemp`` makes it owner-only)."""
    extension = ".nii.gz" if final.name.endswith(".nii.gz") else final.suffix
    handle, name = tempfile.mkstemp(prefix=".", suffix=f".partial{extension}", dir=final.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def write_atomically(final: str | os.PathLike, write: Any) -> None:
    """Call ``write(staging_path)`` then rename the staging file to ``final``; on failure remove it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(final)
    try:
        write(staging)
        os.replace(staging, final)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(final: str | os.PathLike, content: Any) -> None:
    """Write ``content`` as indented JSON to ``final``, atomically."""
    write_atomically(final, lambda path: Path(path).write_text(json.dumps(content, indent=2) + "\n"))


__getattr__ = lazy_getattr(__name__)  # names of earlier versions (common.surface)
