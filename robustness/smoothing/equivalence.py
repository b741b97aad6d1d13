"""Probabilistic local equivalence (seed 000): a smoothing certificate for any function.

A score ``M(a, b)`` in ``[0, 1]`` between two outputs induces the distance
``d(x, x') = 1 - M(f(x), f(x'))``; ``x0`` is locally equivalent within ``t`` at radius ``R`` when, with
confidence ``1 - alpha``, noise ``e ~ N(0, sigma^2 I)`` keeps ``d(x0, x0 + e) < t`` with probability
``> 1/2``, and ``R = sigma * PhiInv(p_lower)`` (the smoothed indicator of ``d < t`` is then constant on
that L2 ball).

With a label ``y`` the distance compares each output's score against the clean one,
``d_y(x0, x') = 1 - M(f(x'), y) / M(f(x0), y)`` (1 when both scores are 0, ``-inf`` when only the
clean score is 0); the paper's Algorithm 1 prints that ratio inverted, see algorithms.md c).

For classifiers with ``M = accuracy`` this is ordinary randomized smoothing of the top class.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..attacks.base import eval_mode
from ..metrics import f_measure, mean_iou, pixel_accuracy, symmetric_best_dice
from .classification import ABSTAIN
from .sampling import Model, check_image, generator, noisy_outputs
from .statistics import SmoothingError, check_alpha, check_samples, check_sigma, lower_confidence_bound, radius

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``M(pred, ref)``: per-example scores in [0, 1] (``N``) of a batch of outputs against a reference
batch of the same shape (or of batch size 1, broadcast)."""

SCORES: tuple[str, ...] = ("sbd", "dice", "iou", "accuracy")


def _broadcast(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return ref.expand_as(pred) if ref.shape[0] == 1 and pred.shape[0] != 1 else ref


def accuracy_score(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """1 where the classes agree (``N`` labels) or the share of agreeing pixels (``NxHxW`` masks)."""
    ref = _broadcast(pred, ref)
    if pred.dim() == 1:
        return (pred == ref).to(torch.float64)
    return pixel_accuracy(pred, ref)


def score_function(score: Union[str, Score], num_classes: Optional[int] = None, background: int = 0) -> Score:
    """The score ``M`` named ``score`` (one of :data:`SCORES`), or ``score`` itself when callable.

    ``sbd`` (symmetric best dice) and ``iou`` (mean IoU) need ``num_classes``; ``dice`` is the
    foreground/background F-measure.
    """
    if callable(score):
        return score
    if score == "accuracy":
        return accuracy_score
    if score not in SCORES:
        raise SmoothingError(f"unknown score {score!r}: use one of {', '.join(SCORES)} or a callable M(pred, ref)")
    if score == "dice":
        return lambda pred, ref: f_measure(pred, _broadcast(pred, ref), background=background)
    if num_classes is None:
        raise SmoothingError(f"the score {score!r} needs num_classes")
    if score == "sbd":
        return lambda pred, ref: symmetric_best_dice(pred, _broadcast(pred, ref), num_classes, background=background)
    return lambda pred, ref: mean_iou(pred, _broadcast(pred, ref), num_classes, background=background)


def argmax_decode(output: torch.Tensor) -> torch.Tensor:
    """Class per example (``NxK`` logits) or per pixel (``NxKxHxW`` logits); ties go to the first class."""
    if output.dim() < 2:
        raise SmoothingError(f"expected logits NxK or NxKxHxW, the model returned shape {tuple(output.shape)}")
    return output.max(1).indices  # = argmax(1), faster on NCHW logits on the CPU (see sampling.py)


@dataclass(frozen=True)
class EquivalenceCertificate:
    """``radius`` (0 when abstaining) within which ``x0`` is locally equivalent at threshold ``t``;
    ``count`` of the ``n`` samples stayed within ``t``; ``p_lower`` bounds that probability."""

    radius: float
    p_lower: float
    count: int
    n: int
    clean_score: Optional[float]

    @property
    def abstained(self) -> bool:
        """True when the bound did not exceed 1/2."""
        return self.p_lower <= 0.5

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        return asdict(self) | {"abstained": self.abstained}


def within_threshold(scores: torch.Tensor, t: float, clean: Optional[float] = None) -> torch.Tensor:
    """Which samples have distance ``< t``: ``1 - M(y0, y')`` without a label, or the corrected ratio
    ``1 - M(y', y) / M(y0, y)`` when ``clean = M(y0, y)`` is given."""
    scores = scores.to(torch.float64)
    if clean is None:
        distance = 1.0 - scores
    elif clean > 0:
        distance = 1.0 - scores / clean
    else:  # the clean output scores 0: a noisy output scoring 0 too is at distance 1, any other at -inf
        distance = torch.where(scores > 0, torch.full_like(scores, -np.inf), torch.ones_like(scores))
    return distance < t


def certify_equivalence(model: Model, x0: torch.Tensor, *, sigma: float = 0.1, n: int = 160,
                        alpha: float = 0.05, t: float = 0.1, score: Union[str, Score] = "sbd",
                        label: Optional[torch.Tensor] = None, num_classes: Optional[int] = None,
                        background: int = 0, decode: Callable[[torch.Tensor], torch.Tensor] = argmax_decode,
                        batch_size: int = 32, seed: int = 0, gen: Optional[torch.Generator] = None
                        ) -> EquivalenceCertificate:
    """CERTIFYPROBABILISTICEQUIVALENCE of ``model`` at ``x0`` (``CxHxW`` in [0, 1]).

    ``decode`` turns the model's output batch into predictions (default: argmax over dim 1);
    ``score`` compares predictions (see :func:`score_function`). Without ``label`` the noisy
    predictions are compared with the clean one; with ``label`` (the ground truth, e.g. ``HxW``)
    the corrected ratio is used.
    """
    sigma, alpha = check_sigma(sigma), check_alpha(alpha)
    check_samples(1, n)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not float(t) > 0:
        raise SmoothingError(f"the threshold t must be a positive number, got {t!r}")
    x0 = check_image(x0)
    with eval_mode(model), torch.inference_mode():
        clean_output = model(x0[None])
    if num_classes is None and score in ("sbd", "iou"):
        num_classes = int(clean_output.shape[1])
    metric = score_function(score, num_classes, background)
    clean_pred = decode(clean_output)
    reference, clean_score = clean_pred, None
    if label is not None:
        reference = label.to(clean_pred.device).reshape(clean_pred.shape)
        clean_score = float(metric(clean_pred, reference)[0])
    gen = gen if gen is not None else generator(x0.device, seed)
    count = 0
    for output in noisy_outputs(model, x0, sigma=sigma, num=n, batch_size=batch_size, gen=gen):
        count += int(within_threshold(metric(decode(output), reference), float(t), clean_score).sum())
    p_lower = lower_confidence_bound(count, n, alpha)
    certified = radius(p_lower, sigma) if p_lower > 0.5 else 0.0
    return EquivalenceCertificate(certified, p_lower, count, n, clean_score)


def robustness_score(certificates: list[EquivalenceCertificate] | np.ndarray | list[float]) -> float:
    """ROBUSTNESSSCORE: the mean certified radius over a set of inputs, abstentions counting 0."""
    radii = [c.radius if isinstance(c, EquivalenceCertificate) else max(float(c), 0.0) for c in certificates]
    if not radii:
        raise SmoothingError("the robustness score needs at least one certificate")
    return float(np.mean(radii))


__all__ = ["ABSTAIN", "EquivalenceCertificate", "SCORES", "Score", "accuracy_score", "argmax_decode",
           "certify_equivalence", "robustness_score", "score_function", "within_threshold"]
