"""A package's manifest as a trust boundary: ``verify`` checks a zip or an unpacked folder against its
``manifest.sha256`` without trusting anything in it, and ``unpack`` extracts a zip through the same
checks. Entries are streamed and hashed in blocks, within a bound on the total size; absolute
paths, ``..``, links, anything not in the manifest (bytecode caches included) and malformed
manifests are refused with one line.

What the manifest proves: every file is the one the packager hashed, and nothing was added or
removed. What it does not: the manifest travels inside the package, so whoever can change a file
can rewrite the manifest too. Compare its own SHA-256 (printed by ``verify``) with the value the
sender published apart from the package (``--manifest_sha256``), as the model zoo pins large files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from common.errors import InputError, first_line

MANIFEST = "manifest.sha256"
RUN_OUTPUTS = ("runs", "eval")  # top-level folders a run of the bundle writes into its own folder
DEFAULT_MAX_BYTES = 4 * 2**30
MAX_MANIFEST_BYTES = 2**20
BLOCK = 2**20
_LINE = re.compile(r"([0-9a-f]{64})  (.+)")
_BYTECODE_HINT = ("a package carries no bytecode; Python writes __pycache__ when the package runs: "
                  "verify before running it, or delete those folders")


def safe_relative_path(name: str, source: Path) -> str:
    """``name`` as a plain relative POSIX path; :class:`InputError` for an absolute path, a drive,
    a backslash, or an empty, ``.`` or ``..`` component."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or ":" in parts[0] or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"{source}: entry {name!r} is not a plain relative path inside the package")
    return name


def parse_manifest(content: bytes, source: Path) -> dict[str, str]:
    """``{path: sha256}`` of a ``manifest.sha256`` (``sha256sum`` format); :class:`InputError` naming
    the first line that is not ``<64 hex digits>  <relative path>``, or a path listed twice."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{source}: {MANIFEST} is not UTF-8 text ({first_line(err)})") from err
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise InputError(f"{source}: {MANIFEST} line {number} is not '<sha256>  <path>': {line[:80]!r}")
        digest, path = match.groups()
        if safe_relative_path(path, source) in listed:
            raise InputError(f"{source}: {MANIFEST} lists {path!r} twice")
        listed[path] = digest
    return listed


class _Budget:
    """Counts the bytes read from a package; :class:`InputError` past ``limit``."""

    def __init__(self, source: Path, limit: int) -> None:
        self.source, self.limit, self.used = source, limit, 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise InputError(f"{self.source}: holds more than {self.limit:,} bytes (--max_bytes); refused")


def _digest(stream: BinaryIO, budget: _Budget, sink: BinaryIO | None = None) -> str:
    """SHA-256 of ``stream`` read in blocks within ``budget``, copied to ``sink`` when given."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(BLOCK), b""):
        budget.take(len(block))
        digest.update(block)
        if sink is not None:
            sink.write(block)
    return digest.hexdigest()


def _zip_entries(archive: zipfile.ZipFile, source: Path, limit: int) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """The zip's one top folder and its files by path inside it, every name checked, and the
    declared sizes within ``limit`` before anything is read."""
    roots, files = set(), {}
    for info in archive.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"{source}: entry {info.filename!r} is a link; a package holds plain files only")
        name = info.filename.rstrip("/") if info.is_dir() else info.filename
        safe_relative_path(name, source)
        root, _, inside = name.partition("/")
        roots.add(root)
        if info.is_dir():
            continue
        if not inside:
            raise InputError(f"{source}: file {name!r} at the top of the zip; a package is one bundle folder")
        if inside in files:
            raise InputError(f"{source}: entry {name!r} appears twice")
        files[inside] = info
    if len(roots) != 1:
        raise InputError(f"{source}: expected one bundle folder at the top of the zip, found {sorted(roots)}")
    declared = sum(info.file_size for info in files.values())
    if declared > limit:
        raise InputError(f"{source}: declares {declared:,} bytes, more than {limit:,} (--max_bytes); refused")
    return roots.pop(), files


def _folder_entries(folder: Path) -> Iterator[tuple[str, Path]]:
    """Every file of an unpacked package by relative path, run outputs left out; links and special
    files refused."""
    for current, dirs, names in os.walk(folder):
        here = Path(current)
        if here == folder:
            dirs[:] = [d for d in dirs if d not in RUN_OUTPUTS]
        for name in [*dirs, *names]:
            path = here / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise InputError(f"{folder}: {relative} is a link; a package holds plain files only")
            if name in names and not path.is_file():
                raise InputError(f"{folder}: {relative} is not a regular file")
        yield from ((path.relative_to(folder).as_posix(), path) for path in (here / n for n in sorted(names)))


def _compare(source: Path, listed: dict[str, str], found: dict[str, str | None]) -> None:
    """:class:`InputError` naming files missing, not listed, or changed (``found`` digests; ``None``:
    not read yet)."""
    problems = [f"{name}: missing" for name in sorted(set(listed) - set(found))]
    extra = sorted(set(found) - set(listed))
    problems += [f"{name}: not in the manifest" for name in extra]
    problems += [f"{name}: changed (SHA-256 differs)" for name in sorted(set(found) & set(listed))
                 if found[name] is not None and found[name] != listed[name]]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        hint = f" ({_BYTECODE_HINT})" if any("__pycache__" in name.split("/") for name in extra) else ""
        raise InputError(f"{source}: does not match its manifest: {shown}{hint}")


def _check_manifest_hash(source: Path, content: bytes, expected: str | int | None) -> str:
    """The manifest's SHA-256, checked against ``expected`` (the command line may hand over a digest
    of decimal digits only as an integer)."""
    actual = hashlib.sha256(content).hexdigest()
    if isinstance(expected, int):
        expected = format(expected, "064d")
    if expected is not None and actual != expected.lower():
        raise InputError(f"{source}: {MANIFEST} has SHA-256 {actual}, not the published {expected}")
    return actual


def _check(path: Path, max_bytes: int, manifest_sha256: str | None, open_sink: Callable[[str], BinaryIO] | None = None) -> tuple[str, int, str]:
    """Check the package at ``path``; with ``open_sink``, also copy every checked file of a zip into
    the file it returns. Returns the package's folder name, the number of files, the manifest's hash."""
    budget = _Budget(path, max_bytes)
    if path.is_dir():
        files = dict(_folder_entries(path))
        if MANIFEST not in files:
            raise InputError(f"{path}: no {MANIFEST}; not a package built by `python -m common package`")
        if files[MANIFEST].stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes")
        content = files.pop(MANIFEST).read_bytes()
        listed = parse_manifest(content, path)
        found = {}
        for name, file in files.items():
            with open(file, "rb") as stream:
                found[name] = _digest(stream, budget)
        _compare(path, listed, found)
        return path.name, len(listed), _check_manifest_hash(path, content, manifest_sha256)
    try:
        with zipfile.ZipFile(path) as archive:
            root, files = _zip_entries(archive, path, max_bytes)
            if MANIFEST not in files:
                raise InputError(f"{path}: no {MANIFEST}; not a package built by `python -m common package`")
            if files[MANIFEST].file_size > MAX_MANIFEST_BYTES:
                raise InputError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes")
            content = archive.read(files.pop(MANIFEST))
            listed = parse_manifest(content, path)
            _compare(path, listed, dict.fromkeys(files))  # names first: nothing unlisted is read or written
            found = {}
            for name, info in files.items():
                with archive.open(info) as stream:
                    if open_sink is None:
                        found[name] = _digest(stream, budget)
                    else:
                        with open_sink(name) as sink:
                            found[name] = _digest(stream, budget, sink)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable zip ({first_line(err)})") from err
    _compare(path, listed, found)
    if open_sink is not None:
        with open_sink(MANIFEST) as sink:
            sink.write(content)
    return root, len(listed), _check_manifest_hash(path, content, manifest_sha256)


def verify(package_path: str, max_bytes: int = DEFAULT_MAX_BYTES, manifest_sha256: str | None = None) -> str:
    """Check a package (zip, or the folder it was unpacked to, before it runs) against its
    ``manifest.sha256``: every listed file present and unchanged, nothing else (no bytecode, no
    links), paths inside the package only, at most ``max_bytes`` read. Raises :class:`InputError`
    naming the first problems; returns a line with the manifest's own SHA-256.

    Args:
        package_path: ``dist/<name>-<version>.zip``, or the folder it was unpacked to.
        max_bytes: the most bytes the package may hold.
        manifest_sha256: the manifest's SHA-256 as the sender published it apart from the package;
            checked when given.
    """
    path = Path(package_path)
    if not path.exists():
        raise InputError(f"{path}: no such package")
    _, count, digest = _check(path, max_bytes, manifest_sha256)
    return f"{path}: {count} files match {MANIFEST} (SHA-256 of the manifest: {digest}; compare it with the published one)"


def unpack(package_path: str, output_dir: str, max_bytes: int = DEFAULT_MAX_BYTES, manifest_sha256: str | None = None) -> str:
    """Extract a package zip into ``output_dir/<bundle>`` through the checks of :func:`verify`: files
    are written as they are hashed into a staging folder that is renamed into place only when every
    one matches the manifest; nothing is left behind otherwise. Returns the bundle folder.

    Args:
        package_path: ``dist/<name>-<version>.zip``.
        output_dir: folder to unpack into; ``output_dir/<bundle>`` must not exist.
        max_bytes: the most bytes the package may hold.
        manifest_sha256: the manifest's published SHA-256; checked when given.
    """
    path, output = Path(package_path), Path(output_dir)
    if not path.is_file():
        raise InputError(f"{path}: no such package zip")
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=output))

    def open_sink(name: str) -> BinaryIO:
        target = staging.joinpath(*PurePosixPath(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return open(target, "xb")

    try:
        root, _, _ = _check(path, max_bytes, manifest_sha256, open_sink)
        final = output / safe_relative_path(root, path)
        if final.exists():
            raise InputError(f"{final}: already exists; unpack somewhere else or remove it")
        staging.chmod(0o755)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return str(final)
