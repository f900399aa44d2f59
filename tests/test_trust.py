"""Trust boundaries: a package's manifest (``verify``, ``unpack``) refuses whatever it does not vouch for."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from common.errors import InputError
from common.cli.verify import MANIFEST, unpack, verify
from conftest import REPO_ROOT

FILES = {"configs/inference.json": b"{}\n", "scripts/__init__.py": b"BUNDLE_ROOT = '.'\n", "models/model.pt": b"weights"}


def manifest_of(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(c).hexdigest()}  {n}\n" for n, c in sorted(files.items())).encode()


def write_zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A zip of ``entries`` (name -> content) and symbolic-link entries ``links`` (name -> target)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def package(path: Path, files: dict[str, bytes] = FILES, manifest: bytes | None = None, extra: dict[str, bytes] | None = None) -> Path:
    entries = {f"pkg/{n}": c for n, c in files.items()}
    entries[f"pkg/{MANIFEST}"] = manifest_of(files) if manifest is None else manifest
    return write_zip(path, {**entries, **(extra or {})})


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_a_sound_package_verifies_and_unpacks(tmp_path: Path) -> None:
    archive = package(tmp_path / "pkg.zip")
    digest = hashlib.sha256(manifest_of(FILES)).hexdigest()
    assert digest in verify(str(archive))
    folder = Path(unpack(str(archive), str(tmp_path / "site"), manifest_sha256=digest))
    assert folder == tmp_path / "site" / "pkg"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {*FILES, MANIFEST}
    assert "3 files match" in verify(str(folder))
    (folder / "eval").mkdir()
    (folder / "eval" / "scan_seg.nii.gz").write_bytes(b"an output")  # what a run writes is not the package's
    verify(str(folder))


@pytest.mark.parametrize(
    "case, problem",
    [
        ("parent path", "entry 'pkg/../../evil.py' is not a plain relative path inside the package"),
        ("absolute path", "entry '/etc/evil.py' is not a plain relative path"),
        ("link", "entry 'pkg/scripts/network_def.py' is a link"),
        ("top-level file", "file 'evil.py' at the top of the zip"),
        ("malformed line", "manifest.sha256 line 4 is not '<sha256>  <path>'"),
        ("not utf-8", "manifest.sha256 is not UTF-8 text"),
        ("unlisted bytecode", "scripts/__pycache__/network_def.cpython-311.pyc: not in the manifest (a package carries no bytecode"),
        ("changed", "models/model.pt: changed (SHA-256 differs)"),
        ("published hash", "manifest.sha256 has SHA-256"),
        ("too large", "more than 1,000 (--max_bytes)"),
    ],
)
def test_verify_and_unpack_refuse_in_one_line(case: str, problem: str, tmp_path: Path) -> None:
    archive, args = tmp_path / "pkg.zip", []
    if case == "parent path":
        package(archive, extra={"pkg/../../evil.py": b"print('escaped')"})
    elif case == "absolute path":
        package(archive, extra={"/etc/evil.py": b"x"})
    elif case == "link":
        files = {n: c for n, c in FILES.items()}
        files["scripts/network_def.py"] = b"/etc/passwd"
        entries = {f"pkg/{n}": c for n, c in FILES.items()}
        entries[f"pkg/{MANIFEST}"] = manifest_of(files)
        write_zip(archive, entries, links={"pkg/scripts/network_def.py": "/etc/passwd"})
    elif case == "top-level file":
        package(archive, extra={"evil.py": b"x"})
    elif case == "malformed line":
        package(archive, manifest=manifest_of(FILES) + b"not a checksum line\n")
    elif case == "not utf-8":
        package(archive, manifest=b"\xff\xfe" + manifest_of(FILES))
    elif case == "unlisted bytecode":
        package(archive, extra={"pkg/scripts/__pycache__/network_def.cpython-311.pyc": b"planted code"})
    elif case == "changed":
        package(archive, manifest=manifest_of({**FILES, "models/model.pt": b"other weights"}))
    elif case == "published hash":
        package(archive)
        args = ["--manifest_sha256", "0" * 64]
    else:
        package(archive, files={**FILES, "models/model.pt": b"\0" * 5000})
        args = ["--max_bytes", "1000"]
    for command in (["verify", str(archive)], ["unpack", str(archive), "--output_dir", str(tmp_path / "site")]):
        result = cli(*command, *args)
        assert result.returncode != 0
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {archive}: ") and problem in line, result.stderr[-1500:]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "site").exists() or not [p for p in (tmp_path / "site").rglob("*") if p.is_file()]
    assert not (tmp_path / "escaped").exists() and not Path("/etc/evil.py").exists()


def test_unpacked_folder_with_planted_bytecode_or_a_link_is_refused(tmp_path: Path) -> None:
    folder = Path(unpack(str(package(tmp_path / "pkg.zip")), str(tmp_path / "site")))
    cache = folder / "scripts" / "__pycache__"
    cache.mkdir()
    (cache / "network_def.cpython-311.pyc").write_bytes(b"planted code")
    with pytest.raises(InputError, match=r"scripts/__pycache__/network_def.cpython-311.pyc: not in the manifest \(a package carries no bytecode"):
        verify(str(folder))
    (cache / "network_def.cpython-311.pyc").unlink()
    cache.rmdir()
    os.symlink("/etc/hostname", folder / "configs" / "extra.json")
    with pytest.raises(InputError, match="configs/extra.json is a link"):
        verify(str(folder))


def test_unpack_never_overwrites(tmp_path: Path) -> None:
    archive = package(tmp_path / "pkg.zip")
    (tmp_path / "site" / "pkg").mkdir(parents=True)
    (tmp_path / "site" / "pkg" / "mine.txt").write_text("a partner's file")
    with pytest.raises(InputError, match="already exists"):
        unpack(str(archive), str(tmp_path / "site"))
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["pkg"]
    assert (tmp_path / "site" / "pkg" / "mine.txt").read_text() == "a partner's file"


def weights_run(tmp_path: Path, existing: float | None):
    """A one-weight network, an evaluator whose metric is that weight, and ``BestWeights`` over a
    ``model.pt`` holding ``existing`` (none when ``None``)."""
    import torch
    from ignite.engine import Engine, Events

    from common.workflow.checkpoints import BestWeights, CheckpointMetadata

    class Evaluator(Engine):
        """Runs over one batch, as ``SupervisedEvaluator.run()`` runs over its own loader."""

        def run(self, data=None, **kwargs):
            return super().run([0] if data is None else data, **kwargs)

    network = torch.nn.Linear(1, 1, bias=False)
    evaluator = Evaluator(lambda engine, batch: None)
    evaluator.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(val_mean_dice=float(network.weight)))
    metadata = CheckpointMetadata(bundle="toy", settings={"feature_size": 1})
    if existing is not None:
        torch.save({"model": {"weight": torch.tensor([[existing]])}, "metadata": metadata.state_dict()}, tmp_path / "model.pt")
    best = BestWeights(str(tmp_path), network, evaluator, metadata)
    trainer = Engine(lambda engine, batch: None)
    best.attach(trainer)
    return network, evaluator, trainer, best


def set_weight(network, value: float) -> None:
    import torch

    with torch.no_grad():
        network.weight.fill_(value)


def test_model_pt_is_replaced_only_by_better_weights_than_those_already_there(tmp_path: Path) -> None:
    import torch

    network, evaluator, trainer, best = weights_run(tmp_path, existing=0.8)
    set_weight(network, 0.1)
    trainer.run([0], max_epochs=1)  # scores the weights already there first
    assert best.best == pytest.approx(0.8) and float(network.weight) == pytest.approx(0.1)  # the trained weights are back
    evaluator.run([0])  # a validation at 0.1: worse, model.pt stays
    assert float(torch.load(tmp_path / "model.pt", weights_only=True)["model"]["weight"]) == pytest.approx(0.8)
    set_weight(network, 0.9)
    evaluator.run([0])
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert float(saved["model"]["weight"]) == pytest.approx(0.9)
    assert saved["metadata"]["validation"]["value"] == pytest.approx(0.9) and saved["metadata"]["settings"] == {"feature_size": 1}


def test_a_save_that_fails_half_way_leaves_the_previous_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    network, evaluator, trainer, _ = weights_run(tmp_path, existing=0.2)
    trainer.run([0], max_epochs=1)
    before = (tmp_path / "model.pt").read_bytes()

    def disk_full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    set_weight(network, 0.7)
    with pytest.raises(OSError, match="No space left"):
        evaluator.run([0])
    assert (tmp_path / "model.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_weights_of_another_run_in_the_output_folder_stop_training_before_it_starts(tmp_path: Path) -> None:
    import torch

    from conftest import build_network, error_line_in_process, make_dataset, recorded_settings, train_overrides

    data = make_dataset(tmp_path / "data")
    (tmp_path / "models").mkdir()
    wide = recorded_settings("attention_unet", feature_size=8)
    torch.save({"model": build_network("attention_unet", feature_size=8).state_dict(), "metadata": {"settings": wide}},
               tmp_path / "models" / "model.pt")
    before = (tmp_path / "models" / "model.pt").read_bytes()
    line = error_line_in_process("attention_unet", ["train.json"], train_overrides("attention_unet", data, tmp_path))
    assert line.startswith(f"error: {tmp_path / 'models' / 'model.pt'}: weights of another run are there (feature_size: trained with 8, the config has 4")
    assert (tmp_path / "models" / "model.pt").read_bytes() == before
    assert not list((tmp_path / "models").glob("checkpoint_epoch=*.pt"))  # not one epoch trained
