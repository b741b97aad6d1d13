"""Adaptive-attack wrappers (Athalye, Carlini & Wagner 2018): BPDA and EOT.

Both are ``nn.Module`` models of ``[0, 1]`` images, so every gradient attack takes them as it takes
the model itself:

* :class:`BPDA` (backward-pass differentiable approximation) breaks defences that are not
  differentiable (quantisation, thermometer encoding, JPEG, ...): forward ``classifier(transform(x))``
  exactly, backward through ``classifier(approximation(x))``.
* :class:`EOT` (expectation over transformation) breaks randomized defences: it averages the model's
  outputs over ``samples`` random draws, so the attack's gradient is averaged over the randomness.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
from torch import nn

from threedb.robustness.attacks.base import AttackError

Transform = Callable[[torch.Tensor], torch.Tensor]


class BPDA(nn.Module):
    """``classifier(transform(x))`` in the forward pass, gradient of ``classifier(approximation(x))`` backward.

    ``approximation`` must return a tensor of ``transform(x)``'s shape and be differentiable; the
    default is the identity (straight-through estimator, for transforms that keep the input's
    shape, e.g. bit-depth reduction). Implemented as ``a + (t - a).detach()`` with ``t =
    transform(x)`` computed without a graph and ``a = approximation(x)``: the value is exactly ``t``,
    the derivative that of ``a``.
    """

    def __init__(self, classifier: nn.Module, transform: Transform,
                 approximation: Optional[Transform] = None) -> None:
        super().__init__()
        if not callable(transform) or (approximation is not None and not callable(approximation)):
            raise AttackError("BPDA needs a callable transform (and approximation, when given)")
        self.classifier = classifier
        # nn.Module transforms are registered as submodules (eval mode, devices); plain functions are kept as is.
        self.transform = transform
        self.approximation = approximation

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``transform(x)`` with the approximation's gradient."""
        with torch.no_grad():
            exact = self.transform(x)
        approx = self.approximation(x) if self.approximation is not None else x
        if approx.shape != exact.shape:
            raise AttackError(f"BPDA: the approximation gives shape {tuple(approx.shape)} but the transform "
                              f"{tuple(exact.shape)}; the identity (straight-through) default only fits "
                              "transforms that keep the input's shape, pass approximation=")
        return approx + (exact.to(approx.dtype) - approx).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encode(x))


class EOT(nn.Module):
    """The expectation of a randomized ``model`` over ``samples`` draws (each call draws anew).

    ``average="probs"`` (default) returns ``log(mean softmax)`` over the draws, so cross-entropy on
    the output is the loss of the averaged prediction and ``argmax`` the averaged vote;
    ``average="logits"`` returns the mean logits. Softmax is taken over dim 1, so segmentation logits
    ``NxKxHxW`` work as well. The randomness is the model's own (e.g. the global torch generator):
    seed it for reproducible attacks.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], samples: int = 10,
                 average: Literal["logits", "probs"] = "probs") -> None:
        super().__init__()
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise AttackError(f"EOT samples must be a positive integer, got {samples!r}")
        if average not in ("logits", "probs"):
            raise AttackError(f"EOT average must be 'logits' or 'probs', got {average!r}")
        self.model, self.samples, self.average = model, samples, average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: Optional[torch.Tensor] = None
        for _ in range(self.samples):
            out = self.model(x)
            part = out.softmax(1) if self.average == "probs" else out
            total = part if total is None else total + part
        mean = total / self.samples
        return mean.clamp_min(1e-30).log() if self.average == "probs" else mean
