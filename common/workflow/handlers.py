"""Training handlers every bundle attaches: networks with auxiliary training outputs (deep
supervision, reconstructions) go through the same trainer, metrics and post-processing."""

from __future__ import annotations

import math

from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys


class AuxiliaryOutputs:
    """After the loss, keep only the logits of a network whose training output is a dict (e.g.
    :class:`common.networks.MSGANet`: ``{"logits", "masks", ...}``), so that post-processing and
    metrics see a plain tensor; and log the loss's terms (``loss_function.last_terms``) at every
    iteration, refusing non-finite ones by name. A no-op for networks that return a tensor.
    """

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        prediction = output[CommonKeys.PRED]
        if isinstance(prediction, dict):
            output[CommonKeys.PRED] = prediction["logits"]
        terms = getattr(engine.loss_function, "last_terms", None)
        if not terms:
            return
        bad = [name for name, value in terms.items() if not math.isfinite(value)]
        if bad:
            raise FloatingPointError(f"loss terms {bad} are not finite at iteration {engine.state.iteration}")
        epoch, iteration = engine.state.epoch, (engine.state.iteration - 1) % engine.state.epoch_length + 1
        shown = " ".join(f"{name}: {value:.4f}" for name, value in terms.items())
        engine.logger.info(f"Epoch: {epoch}/{engine.state.max_epochs}, Iter: {iteration}/{engine.state.epoch_length} -- loss terms {shown}")
