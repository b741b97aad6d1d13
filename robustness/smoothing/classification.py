"""Randomized smoothing of a classifier (Cohen, Rosenfeld & Kolter 2019): CERTIFY and PREDICT.

The smoothed classifier ``g(x) = argmax_c P(f(x + e) = c)``, ``e ~ N(0, sigma^2 I)``, is constant on
the L2 ball of radius ``sigma * PhiInv(pA)`` around ``x`` whenever ``pA > 1/2`` lower-bounds the
probability of its top class. :func:`certify` returns that radius with confidence ``1 - alpha``
(over the Monte Carlo draws); :func:`predict` returns ``g(x)`` or abstains, wrong with probability
at most ``alpha``.

Both split into a sampling step and a pure statistical step (:func:`certify_counts`,
:func:`predict_counts`), so any source of class counts can be certified the same way: the 3D
scene-parameter smoothing of ``threedb run`` counts the predictions on renders instead of on
noisy pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .sampling import Model, class_counts, generator
from .statistics import (SmoothingError, check_alpha, check_samples, check_sigma, lower_confidence_bound,
                         radius, two_sided_pvalue)

ABSTAIN = -1


@dataclass(frozen=True)
class Certificate:
    """The outcome of CERTIFY for one input.

    ``prediction`` is the smoothed class or :data:`ABSTAIN`; ``radius`` the certified L2 radius
    (in the noise's units; 0 when abstaining); ``p_lower`` the lower confidence bound on the top
    class's probability; ``count`` how many of the ``n`` estimation samples gave the selected class
    ``candidate`` (the argmax of the ``n0`` selection samples).
    """

    prediction: int
    radius: float
    p_lower: float
    candidate: int
    count: int
    n: int
    n0: int

    @property
    def abstained(self) -> bool:
        """True when the bound did not exceed 1/2."""
        return self.prediction == ABSTAIN

    def to_dict(self) -> dict:
        """The certificate as plain JSON-ready values."""
        return asdict(self)


def _counts_array(counts: Sequence[int] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    array = np.asarray(counts.cpu() if isinstance(counts, torch.Tensor) else counts)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise SmoothingError(f"{name} must be a non-empty 1-D array of non-negative integer counts, "
                             f"got {array.dtype} with shape {array.shape}")
    return array.astype(np.int64)


def certify_counts(counts0: Sequence[int] | np.ndarray | torch.Tensor,
                   counts: Sequence[int] | np.ndarray | torch.Tensor, *, sigma: float, alpha: float
                   ) -> Certificate:
    """CERTIFY's statistics on class counts: select on ``counts0``, bound on ``counts``.

    The candidate is the argmax of the selection counts (ties: the lowest class index); its
    estimation count gives the one-sided Clopper-Pearson bound ``pA``; the radius is
    ``sigma * PhiInv(pA)`` when ``pA > 1/2``, otherwise the certificate abstains.
    """
    sigma, alpha = check_sigma(sigma), check_alpha(alpha)
    c0, c = _counts_array(counts0, "counts0"), _counts_array(counts, "counts")
    if c0.shape != c.shape:
        raise SmoothingError(f"counts0 and counts must have one entry per class each, got {c0.size} and {c.size}")
    n0, n = int(c0.sum()), int(c.sum())
    if n0 < 1 or n < 1:
        raise SmoothingError(f"need at least one selection and one estimation sample, got n0={n0}, n={n}")
    candidate = int(np.argmax(c0))
    count = int(c[candidate])
    p_lower = lower_confidence_bound(count, n, alpha)
    if p_lower > 0.5:
        return Certificate(candidate, radius(p_lower, sigma), p_lower, candidate, count, n, n0)
    return Certificate(ABSTAIN, 0.0, p_lower, candidate, count, n, n0)


def predict_counts(counts: Sequence[int] | np.ndarray | torch.Tensor, *, alpha: float) -> int:
    """PREDICT's test on class counts: the top class when the exact two-sided binomial test of its
    count against the runner-up's (``p = 1/2``) has p-value ``<= alpha``, else :data:`ABSTAIN`."""
    alpha = check_alpha(alpha)
    c = _counts_array(counts, "counts")
    order = np.argsort(-c, kind="stable")
    top = int(order[0])
    n_a = int(c[top])
    n_b = int(c[order[1]]) if c.size > 1 else 0
    if n_a + n_b == 0:
        return ABSTAIN
    return top if two_sided_pvalue(n_a, n_a + n_b, 0.5) <= alpha else ABSTAIN


def certify(model: Model, x: torch.Tensor, *, sigma: float, n0: int = 100, n: int = 100_000,
            alpha: float = 0.001, batch_size: int = 1000, seed: int = 0,
            gen: Optional[torch.Generator] = None) -> Certificate:
    """CERTIFY (Cohen et al., Alg. 1) of the classifier ``model`` at the image ``x`` (``CxHxW``, [0, 1]).

    ``n0`` selection samples pick the candidate class, ``n`` fresh estimation samples bound its
    probability. Noise is drawn on ``x``'s device from ``gen`` or, if none is given, from a new
    generator seeded with ``seed``.
    """
    sigma, alpha = check_sigma(sigma), check_alpha(alpha)
    check_samples(n0, n)
    gen = gen if gen is not None else generator(x.device, seed)
    counts0 = class_counts(model, x, sigma=sigma, num=n0, batch_size=batch_size, gen=gen)
    counts = class_counts(model, x, sigma=sigma, num=n, batch_size=batch_size, gen=gen,
                          num_classes=int(counts0.numel()))
    return certify_counts(counts0, counts, sigma=sigma, alpha=alpha)


def predict(model: Model, x: torch.Tensor, *, sigma: float, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000, seed: int = 0, gen: Optional[torch.Generator] = None) -> int:
    """PREDICT (Cohen et al.): the smoothed class of ``x`` or :data:`ABSTAIN`."""
    sigma, alpha = check_sigma(sigma), check_alpha(alpha)
    check_samples(1, n)
    gen = gen if gen is not None else generator(x.device, seed)
    return predict_counts(class_counts(model, x, sigma=sigma, num=n, batch_size=batch_size, gen=gen),
                          alpha=alpha)


def certified_accuracy(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                       at: Sequence[float] | np.ndarray) -> np.ndarray:
    """Certified accuracy at each radius in ``at``: the share of **all** examples predicted correctly
    with certified radius ``>= r`` (abstentions count as wrong)."""
    r = np.asarray(radii, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if r.shape != ok.shape or r.ndim != 1:
        raise SmoothingError(f"radii and correct must be 1-D and of equal length, got {r.shape} and {ok.shape}")
    thresholds = np.asarray(at, dtype=np.float64)
    if r.size == 0:
        return np.zeros(thresholds.shape)
    return ((r[None, :] >= thresholds[:, None]) & ok[None, :]).mean(1)


__all__ = ["ABSTAIN", "Certificate", "certified_accuracy", "certify", "certify_counts",
           "predict", "predict_counts"]
