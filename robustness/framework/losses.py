"""Training losses that raise a robustness score (Tibo et al., Section 4): ``L = CE - lambda * R``, with R
estimated on samples ``S_eps(x)`` and its indicator ``1[f(x') = f(x)]`` replaced by a cross-entropy so that
it has a gradient.

* **Loss 1 (R2)**: a generator ``g`` (any module ``x -> x'`` in ``[0, 1]``) is co-trained to find the
  closest decision-changing point: it minimises ``0.5 ||g(x) - x||^2 + max(z_c - z_j, 0)`` on
  ``z = f(g(x))`` (``c = f(x)``, ``j`` the runner-up class at ``x``). The classifier minimises
  ``CE(f(x), y) - (lambda / N) sum_i eps*_i / CE(f(x_i), f(x_i*))`` with ``x_i* = g(x_i)`` (detached) and
  ``eps*_i = ||x_i* - x_i||_2``: it is rewarded when the generator's point is far and the classifier still
  agrees with itself there (small CE), pushing the boundary outward. **[GAP]** ``CE(f(x), f(x*))`` is read
  as the cross-entropy of the logits at ``x*`` against the (detached) prediction ``f(x)``; the denominator
  is floored at ``1e-3``.
* **Loss 2 (R4)**: with a frozen WAE, ``M`` (10 in training) samples ``x' = dec(enc(x) + N(0, 0.06^2))``
  per input; the classifier minimises ``CE(f(x), y) - lambda * R`` with the surrogate
  ``R = -mean_{i, m} CE(f(x'_im), f(x_i))`` (**[GAP]**: the on-manifold agreement with the indicator replaced
  by minus a cross-entropy, every sample weighted equally instead of by ``1 / eps``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from threedb.robustness.framework.checks import check_count, check_positive
from threedb.robustness.framework.errors import FrameworkError
from threedb.robustness.framework.wae import manifold_samples


def _check_logits(logits: torch.Tensor, y: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise FrameworkError(f"the classifier must give N x K logits (K >= 2), got {tuple(logits.shape)}")
    if y.shape != (logits.shape[0],):
        raise FrameworkError(f"labels must have shape ({logits.shape[0]},), got {tuple(y.shape)}")


def generator_loss(classifier: nn.Module, generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The generator's objective of Loss 1: ``mean(0.5 ||g(x) - x||^2 + max(z_c - z_j, 0))``."""
    with torch.no_grad():
        top2 = classifier(x).topk(2, dim=1).indices
    c, j = top2[:, 0], top2[:, 1]
    x_star = generator(x)
    if x_star.shape != x.shape:
        raise FrameworkError(f"the generator must keep the input shape {tuple(x.shape)}, got {tuple(x_star.shape)}")
    z = classifier(x_star)
    gap = z.gather(1, c[:, None]).squeeze(1) - z.gather(1, j[:, None]).squeeze(1)
    return (0.5 * (x_star - x).flatten(1).pow(2).sum(1) + gap.clamp_min(0)).mean()


def _clean_term(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
                lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits on ``x`` and their cross-entropy, the first term of both losses (``lam`` checked here)."""
    check_positive(lam, "lam", allow_zero=True)
    logits = classifier(x)
    _check_logits(logits, y)
    return logits, F.cross_entropy(logits, y)


def r2_loss(classifier: nn.Module, generator: nn.Module, x: torch.Tensor, y: torch.Tensor,
            lam: float) -> torch.Tensor:
    """The classifier's objective of Loss 1 (the generator's point is detached)."""
    logits, ce = _clean_term(classifier, x, y, lam)
    if lam == 0:
        return ce
    with torch.no_grad():
        x_star = generator(x)
        eps_star = (x_star - x).flatten(1).norm(dim=1)
    agree = F.cross_entropy(classifier(x_star), logits.argmax(1).detach(), reduction="none")
    return ce - lam * (eps_star / agree.clamp_min(1e-3)).mean()


def r4_loss(classifier: nn.Module, encoder: Callable[[torch.Tensor], torch.Tensor],
            decoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, lam: float, *,
            samples: int = 10, sigma: float = 0.06, generator: torch.Generator | None = None) -> torch.Tensor:
    """Loss 2: ``CE(f(x), y) - lam * R`` with the on-manifold surrogate R of the module docstring."""
    check_count(samples, "samples")
    logits, ce = _clean_term(classifier, x, y, lam)
    if lam == 0:
        return ce
    with torch.no_grad():
        near = manifold_samples(encoder, decoder, x, samples=samples, sigma=sigma, generator=generator)
    target = logits.argmax(1).detach().repeat_interleave(samples)
    r = -F.cross_entropy(classifier(near.flatten(0, 1)), target)
    return ce - lam * r
