"""Checkpoints: strict, ``weights_only`` loading with one-line errors, the settings a ``model.pt``
was trained with (recorded beside its weights, read back by inference), the best weights and the
epoch checkpoints of a training run, and finding the one to resume."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader

from common.errors import InputError, first_line
from common.io import write_atomically

_EPOCH_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
# Recorded settings that only size the sliding window: inference may use another without contradicting the weights.
FREE_SETTINGS = ("roi_size",)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """The dict saved at ``path``, loaded ``weights_only``; :class:`InputError` naming ``path`` otherwise."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: not a loadable weights-only checkpoint ({first_line(err)})") from err
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path}: holds a {type(checkpoint).__name__}, not a dict of state dicts")
    return checkpoint


def model_state(path: str | Path) -> dict:
    """The network's state dict in the checkpoint at ``path`` (its ``model`` entry, or the whole file
    when it is a bare state dict), loaded ``weights_only``."""
    checkpoint = read_checkpoint(path)
    return checkpoint.get("model", checkpoint)


def trained_settings(path: str | Path) -> dict[str, Any]:
    """The config keys ``model.pt`` at ``path`` was trained with (``metadata["settings"]``: classes,
    channels, spacing, normalisation, ROI and the network's sizes); ``{}`` when there is no file yet
    or it records none. Inference configs take their defaults from it."""
    if not Path(path).is_file():
        return {}
    metadata = read_checkpoint(path).get("metadata", {})
    return dict(metadata.get("settings", {})) if isinstance(metadata, dict) else {}


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and mappings as dicts, at every depth, to compare settings."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def contradictions(recorded: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """``"key: trained with A, the config has B"`` for every setting ``config`` gives differently from
    ``recorded`` (:data:`FREE_SETTINGS` are free)."""
    return [f"{key}: trained with {_plain(value)}, the config has {_plain(config[key])}"
            for key, value in recorded.items()
            if key in config and key not in FREE_SETTINGS and _plain(value) != _plain(config[key])]


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
    weights recorded as trained with settings the config contradicts (``expected``), or weights whose
    keys or shapes differ from a network's (torch's strict check, after the network's own load
    hooks), stop with one line naming the file.
    Same arguments as ``CheckpointLoader``; ``strict`` and ``strict_shape`` are always on.

    Args:
        load_path: the checkpoint.
        load_dict: objects to restore, by checkpoint key.
        expected: the config's settings (``trained_with``), checked against the recorded ones.
        kwargs: other arguments of ``CheckpointLoader``.
    """

    def __init__(self, load_path: str, load_dict: dict, expected: Mapping[str, Any] | None = None, **kwargs) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, strict=True, strict_shape=True, **kwargs)
        self.expected = dict(expected or {})

    def __call__(self, engine: Engine) -> None:
        """Check the file and its recorded settings, then load it with ``CheckpointLoader``."""
        path = Path(self.load_path)
        if not path.is_file():
            raise InputError(f"{path}: checkpoint not found; train the bundle first or pass --ckpt_path")
        checkpoint = read_checkpoint(path, self.map_location)
        metadata = checkpoint.get("metadata", {})
        disagree = contradictions(metadata.get("settings", {}) if isinstance(metadata, dict) else {}, self.expected)
        if disagree:
            raise InputError(f"{path}: the config contradicts the weights ({'; '.join(disagree)}); drop those overrides")
        single_state_dict = len(self.load_dict) == 1 and next(iter(self.load_dict)) not in checkpoint
        missing = [] if single_state_dict else [key for key in self.load_dict if key not in checkpoint]
        if missing:
            raise InputError(f"{path}: has no {missing} entry (it has {sorted(checkpoint)})")
        max_epochs = engine.state.max_epochs
        try:
            super().__call__(engine)
        except RuntimeError as err:  # torch's strict check: missing/unexpected keys, shape mismatches
            reason = " ".join(str(err).split())
            raise InputError(f"{path}: weights do not fit the network: {reason[:400]}") from err
        except ValueError as err:
            if max_epochs is not None and engine.state.epoch > max_epochs:
                raise InputError(f"{path}: already trained {engine.state.epoch} epochs; pass --max_epochs above that to go on") from err
            raise InputError(f"{path}: cannot be restored ({first_line(err)})") from err
        if "trainer" in self.load_dict:
            self.logger.info(f"{path}: resuming after epoch {engine.state.epoch}")


class CheckpointMetadata:
    """Plain facts saved beside the weights in ``model.pt``, so that a checkpoint says what it was
    trained for: the bundle, its version, and ``settings`` (the config's ``trained_with``: classes,
    channels, spacing, normalisation, ROI and the network's sizes), which inference reads back
    (:func:`trained_settings`). Only strings, numbers, lists and dicts: ``weights_only``-safe.

    Args:
        fields: the facts, as keyword arguments.
    """

    def __init__(self, **fields) -> None:
        self.fields = fields

    def state_dict(self) -> dict:
        return dict(self.fields)

    def load_state_dict(self, state: dict) -> None:
        self.fields = dict(state)


def _unwrapped(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper, or ``network``."""
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


class BestWeights:
    """``model.pt`` rewritten only with weights that beat, on the validation metric, the best so far,
    and written so that a failed save leaves the previous file in place.

    The best so far is, on resume, the run's own best (restored with the trainer); otherwise the
    score, on this run's validation data, of the weights already in ``model.pt`` (scored once before
    the first training step, so that a new run or a MONAI Label round never replaces better weights
    with worse ones). Weights recorded with other settings than this run's (another network size,
    other classes ...) stop the run before training, naming the file. The new file is written to a
    temporary name, loaded back with ``torch.load(weights_only=True)``, then renamed over the old one.

    Args:
        ckpt_dir: folder of ``model.pt``.
        network: the trained network (``DistributedDataParallel`` or not).
        evaluator: the validation engine whose ``metric_name`` decides.
        metadata: saved beside the weights (:class:`CheckpointMetadata`); its ``settings`` are what
            weights already there must have been trained with.
        metric_name: the validation metric, higher is better.
        filename: the weights' file name.
    """

    def __init__(self, ckpt_dir: str, network: torch.nn.Module, evaluator: Engine, metadata: CheckpointMetadata,
                 metric_name: str = "val_mean_dice", filename: str = "model.pt") -> None:
        self.path = Path(ckpt_dir) / filename
        self.network, self.evaluator, self.metadata, self.metric_name = network, evaluator, metadata, metric_name
        self.best: float | None = None
        self.scoring_existing = False
        self.logger = logging.getLogger(__name__)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self.score_existing)
        self.evaluator.add_event_handler(Events.COMPLETED, self.save_if_better)

    def score_existing(self, trainer: Engine) -> None:
        """The score of the weights already in ``model.pt`` becomes the one to beat (unless resumed)."""
        if self.best is not None or not self.path.is_file():
            return
        checkpoint = read_checkpoint(self.path)
        metadata = checkpoint.get("metadata", {})
        disagree = contradictions(metadata.get("settings", {}) if isinstance(metadata, dict) else {}, self.metadata.fields.get("settings", {}))
        network = _unwrapped(self.network)
        current = {key: value.clone() for key, value in network.state_dict().items()}
        try:
            if disagree:
                raise InputError("; ".join(disagree))
            network.load_state_dict(checkpoint.get("model", {}), strict=True)
        except (InputError, RuntimeError) as err:
            raise InputError(f"{self.path}: weights of another run are there ({' '.join(str(err).split())[:300]}); "
                             "move them or pass another --ckpt_dir, they are never overwritten by other weights") from err
        self.scoring_existing = True
        try:
            self.evaluator.run()
            self.best = float(self.evaluator.state.metrics[self.metric_name])
        finally:
            self.scoring_existing = False
            network.load_state_dict(current)
        self.logger.info(f"{self.path}: the weights already there score {self.metric_name} {self.best:.4f} on this validation "
                         "data; they are replaced only by better ones")

    def save_if_better(self, evaluator: Engine) -> None:
        if self.scoring_existing:
            return
        score = float(evaluator.state.metrics[self.metric_name])
        if self.best is not None and not score > self.best:
            return
        self.best = score
        if idist.get_rank() != 0:
            return
        validation = {"metric": self.metric_name, "value": score, "epoch": evaluator.state.epoch}
        content = {"model": _unwrapped(self.network).state_dict(), "metadata": {**self.metadata.state_dict(), "validation": validation}}

        def write(staging: Path) -> None:
            torch.save(content, staging)
            read_checkpoint(staging)

        write_atomically(self.path, write)
        self.logger.info(f"{self.path}: saved, {self.metric_name} {score:.4f} at epoch {evaluator.state.epoch}")

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]


def epoch_checkpoint(ckpt_dir: str, to_save: dict) -> Checkpoint:
    """``checkpoint_epoch=N.pt`` after every epoch, written atomically, the two latest kept (one is
    always complete while the next is written); saves its own state so that resuming restores the
    pruning list."""
    return Checkpoint(
        to_save, DiskSaver(ckpt_dir, require_empty=False), filename_pattern="checkpoint_epoch={global_step}.pt",
        global_step_transform=lambda engine, event: engine.state.epoch, n_saved=2, include_self=True,
    )
