"""The statistics of randomized smoothing, from scipy and statsmodels (nothing hand-rolled where a
library has it).

* :func:`lower_confidence_bound`: one-sided Clopper-Pearson lower bound on a binomial proportion
  (Cohen et al.'s ``LOWERCONFBOUND``);
* :func:`radius`: ``sigma * PhiInv(p)`` (``PhiInv``: the standard normal quantile);
* :func:`two_sided_pvalue`: the exact two-sided binomial test of ``p = 1/2`` (Cohen et al.'s PREDICT);
* :func:`upper_tail_pvalues`: ``P[Binom(n, tau) >= k]`` per component (SEGCERTIFY's ``BINPVALUE``);
* :func:`fwer_reject`: family-wise error control over many such tests: Holm (default), Bonferroni, or a
  k-FWER budget (Lehmann & Romano's generalised Holm step-down: at most ``k - 1`` false rejections
  are allowed, the probability of ``k`` or more is at most ``alpha``).
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

FWERMethod = Literal["holm", "bonferroni", "kfwer"]
FWER_METHODS: tuple[str, ...] = ("holm", "bonferroni", "kfwer")


class SmoothingError(ValueError):
    """Smoothing cannot run as asked (bad sigma, sample counts, alpha, or model output); says what to change."""


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """``alpha`` as a float in the open interval (0, 1), or :class:`SmoothingError`."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise SmoothingError(f"{name} must be a number in the open interval (0, 1), got {alpha!r}")
    return float(alpha)


def check_sigma(sigma: float, name: str = "sigma") -> float:
    """``sigma`` as a positive finite float, or :class:`SmoothingError`."""
    if (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(float(sigma))
            or float(sigma) <= 0.0):
        raise SmoothingError(f"{name} must be a positive number (the noise standard deviation), got {sigma!r}")
    return float(sigma)


def check_samples(n0: int, n: int) -> None:
    """``n0`` (selection) and ``n`` (estimation) sample counts: positive ints with ``n0 <= n``."""
    for name, value in (("n0", n0), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SmoothingError(f"{name} must be a positive integer, got {value!r}")
    if n0 > n:
        raise SmoothingError(f"n0 ({n0}, the selection samples) must not exceed n ({n}, the estimation samples)")


def lower_confidence_bound(k: int | np.ndarray, n: int, alpha: float) -> float | np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on ``p`` from ``k`` successes in ``n`` trials.

    The lower end of statsmodels' two-sided ``1 - 2 alpha`` "beta" interval, i.e.
    ``Beta.ppf(alpha, k, n - k + 1)`` (0 when ``k = 0``). ``k`` may be an array (one bound each).
    """
    counts = np.asarray(k)
    if n < 1 or (counts < 0).any() or (counts > n).any():
        raise SmoothingError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    lower = proportion_confint(counts, int(n), alpha=2 * check_alpha(alpha), method="beta")[0]
    return float(lower) if counts.ndim == 0 else np.asarray(lower, dtype=np.float64)


def radius(p_lower: float, sigma: float) -> float:
    """``sigma * PhiInv(p_lower)``: the L2 radius certified by a lower bound ``p_lower > 1/2``."""
    return float(sigma * stats.norm.ppf(p_lower))


def two_sided_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value of ``k`` successes in ``n`` trials under ``p``."""
    return float(stats.binomtest(int(k), int(n), p, alternative="two-sided").pvalue)


def upper_tail_pvalues(counts: np.ndarray | Sequence[int], n: int, tau: float) -> np.ndarray:
    """``P[Binom(n, tau) >= k]`` for each ``k`` in ``counts``: the p-value of the one-sided test of
    ``H0: p <= tau`` (rejecting it shows ``p > tau``)."""
    k = np.asarray(counts, dtype=np.int64)
    return stats.binom.sf(k - 1, n, tau)


def fwer_reject(pvalues: np.ndarray | Sequence[float], alpha: float, method: FWERMethod = "holm",
                k: int = 1) -> np.ndarray:
    """Which hypotheses to reject (bool array) with the family-wise error controlled at ``alpha``.

    ``holm`` and ``bonferroni`` keep the chance of any false rejection at most ``alpha`` (Bonferroni
    from statsmodels' ``multipletests``, Holm as the ``k = 1`` step-down below). ``kfwer``: the generalised Holm step-down of Lehmann & Romano (2005) with budget
    ``k`` (the chance of ``k`` or more false rejections is at most ``alpha``; ``k = 1`` is Holm).
    """
    check_alpha(alpha)
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if method not in FWER_METHODS:
        raise SmoothingError(f"unknown multiple-testing method {method!r} (use one of {', '.join(FWER_METHODS)})")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SmoothingError(f"the k-FWER budget k must be a positive integer, got {k!r}")
    if p.size == 0:
        return np.zeros(0, dtype=bool)
    if method == "bonferroni":
        return np.asarray(multipletests(p, alpha=alpha, method="bonferroni")[0], dtype=bool)
    return _step_down(p, alpha, k if method == "kfwer" else 1)


def _step_down(p: np.ndarray, alpha: float, k: int) -> np.ndarray:
    """Generalised Holm step-down (Lehmann & Romano 2005, Thm. 2.2); ``k = 1`` is Holm's procedure.

    Holm is computed here rather than by ``multipletests(method="holm")`` because statsmodels 0.14
    runs ``gc.collect()`` on every Holm call (20-250 ms in a process holding a model), which would
    dominate per-image certification; tests check the two agree.
    """
    m = p.size
    order = np.argsort(p, kind="stable")
    i = np.arange(1, m + 1)
    critical = np.where(i <= k, k * alpha / m, k * alpha / (m + k - i))
    passed = p[order] <= critical
    # reject the smallest p-values up to (not including) the first that fails its critical value
    stop = m if passed.all() else int(np.argmin(passed))
    reject = np.zeros(m, dtype=bool)
    reject[order[:stop]] = True
    return reject


__all__ = ["FWER_METHODS", "FWERMethod", "SmoothingError", "check_alpha", "check_samples", "check_sigma",
           "fwer_reject", "lower_confidence_bound", "radius", "two_sided_pvalue", "upper_tail_pvalues"]
