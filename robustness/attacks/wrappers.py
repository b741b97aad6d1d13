"""Adaptive-attack wrappers (Athalye, Carlini & Wagner 2018): BPDA and EOT; and targeted attacks run for an
untargeted goal: :class:`TowardsTarget` and :func:`object_removal`.

Both are ``nn.Module`` models of ``[0, 1]`` images, so every gradient attack takes them as it takes
the model itself:

* :class:`BPDA` (backward-pass differentiable approximation) breaks defences that are not
  differentiable (quantisation, thermometer encoding, JPEG, ...): forward ``classifier(transform(x))``
  exactly, backward through ``classifier(approximation(x))``.
* :class:`EOT` (expectation over transformation) breaks randomized defences: it averages the model's
  outputs over ``samples`` random draws, so the attack's gradient is averaged over the randomness.

:class:`TowardsTarget` is an :class:`~.base.Attack` (not a model): an untargeted attack that runs a
wrapped *targeted* attack towards a target computed from the labels, e.g. :func:`object_removal`
(segmentation: every pixel pushed to background), the attack that drives a standard segmenter's
F-measure to ~0 where untargeted pixel-wise CE leaves it at 0.15-0.3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
from torch import nn

from threedb.robustness.attacks.base import Attack, AttackError, AttackResult, Model, Segmentation, eval_mode

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


TargetOf = Callable[[torch.Tensor], torch.Tensor]


class TowardsTarget(Attack):
    """An untargeted attack made of a targeted one: runs ``attack`` towards ``target_of(y)``.

    Its goal is untargeted (``targeted`` is False, so :func:`~.ensemble.evaluate_ensemble` takes it):
    ``success`` is the task's untargeted success on ``y`` at the returned point, ``extra["target_success"]``
    the wrapped attack's own (targeted) success. Threat model, task, seed and gradient check are the
    wrapped attack's; ``queries`` are the wrapped attack's plus the one forward pass that scores the
    result, ``gradients`` the wrapped attack's. ``target_of`` maps a label batch to a target batch of the
    same shape (integer labels).
    """

    def __init__(self, attack: Attack, target_of: TargetOf, *, name: Optional[str] = None) -> None:
        if not isinstance(attack, Attack) or not attack.targeted:
            raise AttackError(f"TowardsTarget wraps a targeted attack (e.g. PGD(targeted=True)), got "
                              f"{getattr(attack, 'name', type(attack).__name__)!r} with targeted="
                              f"{getattr(attack, 'targeted', None)}")
        if not callable(target_of):
            raise AttackError("TowardsTarget needs a callable target_of(y) -> target labels")
        super().__init__(norm=attack.norm, eps=attack.eps, task=attack.task, loss=attack.loss, targeted=False,
                         seed=attack.seed, gradient_check=attack.gradient_check)
        self.attack, self.target_of = attack, target_of
        self.name = name or f"{attack.name}-towards-target"
        self.uses_gradients = attack.uses_gradients

    def target(self, y: torch.Tensor) -> torch.Tensor:
        """``target_of(y)``, checked: an integer tensor of ``y``'s shape, on ``y``'s device."""
        goal = self.target_of(y)
        integer = torch.is_tensor(goal) and not goal.dtype.is_floating_point and goal.dtype != torch.bool
        if not integer or goal.shape != y.shape:
            raise AttackError(f"{self.name}: target_of(y) must return integer labels of y's shape {tuple(y.shape)}, "
                              f"got {type(goal).__name__} {tuple(getattr(goal, 'shape', ()))} "
                              f"{getattr(goal, 'dtype', '')}")
        return goal.to(device=y.device, dtype=y.dtype)

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        inner = self.attack(model, x, y, target=self.target(y))   # its own seeded generator, ball check
        with eval_mode(model), torch.no_grad():
            success = self.task.success(model(inner.adv), y)
        return AttackResult(inner.adv, success, inner.queries + 1, inner.gradients,
                            {**inner.extra, "target_success": inner.success})

    def describe(self) -> dict:
        target = getattr(self.target_of, "describe", None)
        return {"name": self.name, "goal": "untargeted", "via": self.attack.describe(),
                "target": target() if callable(target) else getattr(self.target_of, "__name__", repr(self.target_of)),
                "norm": self.norm, "eps": self.eps, "seed": self.seed}


def background_target(y: torch.Tensor, background: int = 0, ignore_index: int = -100) -> torch.Tensor:
    """The all-background mask for segmentation labels ``y`` (``NxHxW``); ``ignore_index`` pixels stay ignored."""
    return torch.where(y == ignore_index, y, torch.full_like(y, background))


@dataclass(frozen=True)
class BackgroundTarget:
    """``target_of`` of :func:`object_removal`: :func:`background_target` with fixed labels."""

    background: int = 0
    ignore_index: int = -100

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return background_target(y, self.background, self.ignore_index)

    def describe(self) -> str:
        return f"all background (class {self.background})"


def object_removal(attack: Attack, *, background: int = 0, name: Optional[str] = None) -> TowardsTarget:
    """Object removal: the targeted segmentation ``attack`` (e.g. ``PGD(targeted=True, task=Segmentation())``)
    run towards the all-background mask, for the untargeted goal; default name ``<attack>-removal``.

    The targeted CE is bounded below by 0, so pixels already at background stop pulling and the steps go
    into flipping the object, which untargeted CE (unbounded on already-flipped background pixels) does not.
    """
    if not isinstance(attack, Attack) or not isinstance(attack.task, Segmentation):
        raise AttackError(f"object_removal needs a segmentation attack (task=Segmentation()), got task "
                          f"{getattr(getattr(attack, 'task', None), 'name', None)!r}")
    target_of = BackgroundTarget(background, attack.task.ignore_index)
    return TowardsTarget(attack, target_of, name=name or f"{attack.name}-removal")
