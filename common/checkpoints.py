"""Checkpoints: strict, ``weights_only`` loading with one-line errors, and finding the one to resume."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader

from common.errors import InputError, first_line

_EPOCH_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str | Path) -> str:
    """Path of the ``checkpoint_epoch=N.pt`` with the largest ``N`` in ``ckpt_dir``."""
    found = {int(m.group(1)): p for p in Path(ckpt_dir).glob("checkpoint_epoch=*.pt") if (m := _EPOCH_CHECKPOINT.search(p.name))}
    if not found:
        raise InputError(f"{ckpt_dir}: no checkpoint_epoch=N.pt to resume from; train once without --resume first")
    return str(found[max(found)])


def load_model_weights(network: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load the ``model`` entry of the checkpoint at ``path`` (or a bare state dict) into ``network``,
    strictly and ``weights_only``; :class:`InputError` naming ``path`` when it cannot be read or
    does not fit the network."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state.get("model", state), strict=True)
    except Exception as err:
        raise InputError(f"{path}: the weights do not fit the network ({first_line(err)})") from err
    return network


class StrictCheckpointLoader(CheckpointLoader):
    """:class:`monai.handlers.CheckpointLoader`, strict, whose failures raise :class:`InputError`.

    A missing, truncated or pickled-code checkpoint (``torch.load(weights_only=True)`` refuses code),
    or weights whose keys or shapes differ from a network's (torch's strict check, after the
    network's own load hooks), stop with one line naming the file.
    Same arguments as ``CheckpointLoader``; ``strict`` and ``strict_shape`` are always on.
    """

    def __init__(self, load_path: str, load_dict: dict, **kwargs) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, strict=True, strict_shape=True, **kwargs)

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        if not path.is_file():
            raise InputError(f"{path}: checkpoint not found; train the bundle first or pass --ckpt_path")
        try:
            checkpoint = torch.load(path, map_location=self.map_location, weights_only=True)
        except Exception as err:
            raise InputError(f"{path}: not a loadable weights-only checkpoint ({first_line(err)})") from err
        if not isinstance(checkpoint, dict):
            raise InputError(f"{path}: holds a {type(checkpoint).__name__}, not a dict of state dicts")
        first_key = next(iter(self.load_dict))
        if len(self.load_dict) == 1 and first_key not in checkpoint:
            checkpoint = {first_key: checkpoint}
        missing = [key for key in self.load_dict if key not in checkpoint]
        if missing:
            raise InputError(f"{path}: has no {missing} entry (it has {sorted(checkpoint)})")
        max_epochs = engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=self.load_dict, checkpoint=checkpoint, strict=True)
        except RuntimeError as err:  # torch's strict check: missing/unexpected keys, shape mismatches
            reason = " ".join(str(err).split())
            raise InputError(f"{path}: weights do not fit the network: {reason[:400]}") from err
        if max_epochs is not None and engine.state.epoch > max_epochs:
            raise InputError(f"{path}: already trained {engine.state.epoch} epochs; pass --max_epochs above that to go on")
        engine.state.max_epochs = max_epochs
        resumed_at = f", resuming after epoch {engine.state.epoch}" if "trainer" in self.load_dict else ""
        self.logger.info(f"Restored {sorted(self.load_dict)} from {path}{resumed_at}")


class CheckpointMetadata:
    """Plain facts saved beside the weights in ``model.pt`` (bundle, version, ROI, spacing, classes),
    so a checkpoint says what it was trained for. Only strings and numbers: ``weights_only``-safe.

    Args:
        fields: the facts, as keyword arguments.
    """

    def __init__(self, **fields) -> None:
        self.fields = fields

    def state_dict(self) -> dict:
        return dict(self.fields)

    def load_state_dict(self, state: dict) -> None:
        self.fields = dict(state)
