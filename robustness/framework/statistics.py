"""Confidence intervals for the framework's estimates (statsmodels / scipy, nothing hand-rolled).

* :func:`bernoulli_interval`: two-sided Clopper-Pearson ("exact", beta) interval of a proportion: used
  wherever an estimate is a mean of Bernoulli draws (``R_S(x, eps)``; a margin curve point; a score whose
  per-input values are 0/1);
* :func:`mean_interval`: an interval of a mean of per-input values: empirical Bernstein (finite-sample,
  used for scores, whose per-input integrals are bounded) or Student-t (asymptotic) when no bound is known.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from threedb.robustness.framework.errors import FrameworkError


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise FrameworkError(f"alpha must be in the open interval (0, 1), got {alpha!r}")
    return float(alpha)


def bernoulli_interval(successes: torch.Tensor | np.ndarray | int, trials: torch.Tensor | np.ndarray | int,
                       alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the two-sided ``1 - alpha`` Clopper-Pearson interval per entry; ``(nan, nan)`` where
    ``trials`` is 0 (no draw, no estimate)."""
    check_alpha(alpha)
    k = np.asarray(successes.cpu() if torch.is_tensor(successes) else successes, dtype=np.float64)
    n = np.asarray(trials.cpu() if torch.is_tensor(trials) else trials, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    low, high = np.full(k.shape, np.nan), np.full(k.shape, np.nan)
    some = n > 0
    if some.any():
        lo, hi = proportion_confint(k[some], n[some], alpha=alpha, method="beta")
        low[some], high[some] = np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)
    return low, high


def mean_interval(values: torch.Tensor | np.ndarray, alpha: float = 0.05,
                  bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` interval of the mean of ``values`` (NaNs dropped); fewer than 2 values give
    ``(nan, nan)``.

    Without ``bounds``: the Student-t interval (asymptotic). With ``bounds = (lo, hi)`` (the range every value
    is known to lie in): the empirical-Bernstein interval of Maurer and Pontil (2009), valid for every
    ``n``, two-sided by a union bound, ``sqrt(2 V log(4/alpha) / n) + 7 B log(4/alpha) / (3 (n - 1))``
    (``V`` the sample variance, ``B = hi - lo``), clipped to the bounds. Unlike the t interval it does not
    collapse to a point when every value happens to be equal (e.g. every input robust on the whole grid).
    """
    check_alpha(alpha)
    v = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size < 2:
        return math.nan, math.nan
    mean, var = float(v.mean()), float(v.var(ddof=1))
    if bounds is None:
        half = float(stats.t.ppf(1 - alpha / 2, v.size - 1)) * math.sqrt(var / v.size)
        return mean - half, mean + half
    lo, hi = float(bounds[0]), float(bounds[1])
    if not hi >= lo:
        raise FrameworkError(f"bounds must be (low, high) with low <= high, got {bounds!r}")
    log_term = math.log(4.0 / alpha)
    half = math.sqrt(2 * var * log_term / v.size) + 7 * (hi - lo) * log_term / (3 * (v.size - 1))
    return max(lo, mean - half), min(hi, mean + half)
