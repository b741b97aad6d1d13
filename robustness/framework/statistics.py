"""Confidence intervals for the framework's estimates (statsmodels / scipy, nothing hand-rolled).

* :func:`bernoulli_interval`: two-sided Clopper-Pearson ("exact", beta) interval of a proportion: used
  wherever an estimate is a mean of Bernoulli draws (``R_S(x, eps)``; a margin curve point; a score whose
  per-input values are 0/1);
* :func:`mean_interval`: a Student-t interval of a mean of bounded per-input values (the CLT; used for a
  score that averages non-binary per-input integrals).
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


def mean_interval(values: torch.Tensor | np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` Student-t interval of the mean of ``values`` (NaNs dropped); a single value
    gives ``(nan, nan)``."""
    check_alpha(alpha)
    v = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size < 2:
        return math.nan, math.nan
    mean, sem = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    half = float(stats.t.ppf(1 - alpha / 2, v.size - 1)) * sem
    return mean - half, mean + half
