"""Training objectives: what a training step minimises, kept apart from the loop that runs it.

An objective is called as ``objective(model, images, labels) -> (loss, logits)`` with ``images`` in
``[0, 1]`` at the model resolution, on the device, and ``model`` the network wrapped in
:class:`threedb.robustness.models.Normalized` (normalisation inside), so adversarial budgets are in
pixel units. ``labels`` are class indices ``N`` (classification) or label masks ``NxHxW``
(segmentation: logits ``NxKxHxW``); every objective here handles both. The loop only does the
optimiser step; it also calls an objective's optional ``set_progress(fraction of training done)``
before every step and ``reseed(seed)`` at every epoch start.

Adversarial objectives (:mod:`threedb.robustness.training`): ``pgd`` (Madry et al.), ``fbf`` (Wong et
al.'s fast FGSM with random start), ``fgsm`` (no random start: reproduces catastrophic overfitting),
``trades`` (Zhang et al.) and ``fbf_trades`` (seed 000); every one takes ``eps`` and ``eps_ramp``.
``relu_stability`` (thesis ch. 6) is ``pgd`` plus the RS loss and an L1 penalty (``pgd`` takes ``l1`` too).

Noise augmentation: ``gaussian`` (Cohen et al.: cross-entropy on ``x + N(0, sigma^2 I)``, ``sigma``
in pixel units), the base models of randomized smoothing (``threedb certify``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from threedb.robustness.attacks import AttackError
from threedb.robustness.training import (FBFTRADESTraining, FBFTraining, FGSMTraining, GaussianNoiseTraining,
                                         PGDTraining, ReLUStabilityTraining, TRADESTraining)
from threedb.sim.errors import ConfigError


class Objective(Protocol):
    """``(model, images, labels) -> (scalar loss to minimise, logits of the clean images)``."""

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class CrossEntropy:
    """Standard training: softmax cross-entropy with optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing), logits


#: Objective name in a training config -> factory called with the config's ``objective_args``.
OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "cross_entropy": CrossEntropy,
    "pgd": PGDTraining,
    "fbf": FBFTraining,
    "fgsm": FGSMTraining,
    "trades": TRADESTraining,
    "fbf_trades": FBFTRADESTraining,
    "gaussian": GaussianNoiseTraining,
    "relu_stability": ReLUStabilityTraining,
}


def make_objective(name: str, args: Mapping[str, Any] | None = None, *, file: Any = None,
                   key: str = "training.objective") -> Objective:
    """The objective called ``name``, built with ``args``; a ConfigError names unknown ones."""
    factory = OBJECTIVES.get(name)
    if factory is None:
        raise ConfigError(f"unknown training objective {name!r}", file=file, key=key, value=name,
                          expected=f"one of {sorted(OBJECTIVES)}")
    try:
        return factory(**dict(args or {}))
    except (TypeError, ValueError, AttackError) as exc:
        raise ConfigError(f"bad arguments for objective {name!r}: {exc}", file=file,
                          key=f"{key}_args", value=dict(args or {})) from None
