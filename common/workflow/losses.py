"""Losses that MONAI does not have: the multi-scale guided attention network's combined loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn


class GuidedAttentionLoss(nn.Module):
    """``seg + reconstruction_weight * rec + guided_weight * guided`` for :class:`common.networks.MSGANet`.

    - ``seg``: Dice + cross-entropy (``monai.losses.DiceCELoss``) of every scale's mask, averaged;
    - ``rec``: mean squared error between each guided attention step's input and its reconstruction,
      averaged over the steps;
    - ``guided``: mean squared error between the latent codes of a scale's two refinement steps,
      averaged over the scales.

    Default weights 0.1 and 0.25 are those of the authors' public implementation
    (github.com/sinAshish/Multi-Scale-Attention). The last terms are kept in ``last_terms`` (floats)
    for the training log. On a plain logits tensor (a network in eval mode) only ``seg`` is computed.

    Args:
        reconstruction_weight: weight of ``rec``.
        guided_weight: weight of ``guided``.
        dice_ce_args: keyword arguments of ``DiceCELoss`` (default: one-hot labels, softmax).
    """

    def __init__(self, reconstruction_weight: float = 0.1, guided_weight: float = 0.25, **dice_ce_args) -> None:
        super().__init__()
        self.reconstruction_weight, self.guided_weight = reconstruction_weight, guided_weight
        self.segmentation = DiceCELoss(**{"to_onehot_y": True, "softmax": True, **dice_ce_args})
        self.last_terms: dict[str, float] = {}

    def forward(self, prediction: torch.Tensor | dict, label: torch.Tensor) -> torch.Tensor:
        """``prediction``: the network's training dict (or logits); ``label``: ``(B, 1, D, H, W)``."""
        if isinstance(prediction, torch.Tensor):
            return self.segmentation(prediction, label)
        seg = torch.stack([self.segmentation(mask, label) for mask in prediction["masks"]]).mean()
        rec = torch.stack([F.mse_loss(out, target) for target, out in prediction["reconstructions"]]).mean()
        guided = torch.stack([F.mse_loss(first, second) for first, second in prediction["latents"]]).mean()
        self.last_terms = {"seg": seg.item(), "reconstruction": rec.item(), "guided": guided.item()}
        return seg + self.reconstruction_weight * rec + self.guided_weight * guided
