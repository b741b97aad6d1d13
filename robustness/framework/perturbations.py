"""Sampling estimators of the basic robustness measure (Tibo et al., Definition 1 and eq. 8):

``R_Q(x, eps) = Q(f(X) = f(x) | B_eps(x))`` estimated as ``R_S(x, eps) = kept / drawn``, the fraction of a
sample ``S_eps(x)`` from ``Q(. | B_eps(x))`` on which the model's prediction stays ``f(x)``. Three choices of Q:

* :class:`UniformBall`: Q uniform on the input cube, so ``Q(. | B_eps(x))`` is uniform on the ball intersected
  with ``[0, 1]^m``. L-inf: that intersection is a box, sampled exactly. L2: uniform in the ball, then clamped
  to the cube (**[GAP]** choice: exact conditioning needs rejection sampling, hopeless in high dimension for
  images with saturated pixels; clamping moves the outside mass onto the cube's faces). ``box=False``
  samples the bare ball.
* :class:`DataNeighbours`: Q = the empirical data distribution of a reference set: ``S_eps(x)`` is every
  reference point within ``eps`` of ``x`` (the estimate is exact for the empirical distribution).
* :class:`OnManifold`: Q = P(X) approximated locally by an autoencoder (Section 4.2, eq. 13): ``M`` samples
  ``dec(enc(x) + N(0, sigma^2 I))`` drawn once per input; ``S_eps(x)`` is the subset within ``eps`` of ``x``.

Where ``S_eps(x)`` is empty (no neighbour or no on-manifold sample that close) the conditional probability is
undefined; the estimate is ``empty_value`` (default 1: nothing in the ball changes the prediction, the
vacuous reading that also makes ``H = 1[p = 1]`` give the margin; pass ``float('nan')`` to leave such
entries out of every average). ``drawn`` says how many samples each entry rests on.

Distances are ``<= eps`` (the paper's "distance <= eps"); randomness comes from a CPU ``torch.Generator``
seeded by ``seed`` (draws moved to the input's device), so a seed gives the same estimate on every device up
to floating-point differences in the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from threedb.robustness.attacks.base import draw, eval_mode
from threedb.robustness.framework.checks import (check_batch, check_count, check_eps_grid, check_norm,
                                                 check_positive, distances)
from threedb.robustness.framework.errors import FrameworkError
from threedb.robustness.framework.statistics import bernoulli_interval

Model = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict(model: Model, points: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``argmax`` of the model's logits on ``points`` (any leading batch size), in chunks of ``batch_size``."""
    if points.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    return torch.cat([model(points[i:i + batch_size]).argmax(1) for i in range(0, points.shape[0], batch_size)])


@dataclass
class BasicRobustness:
    """``R_S(x, eps)`` for ``N`` inputs and ``E`` budgets.

    ``kept`` / ``drawn`` (``N x E``, long): samples of ``S_eps(x)`` that keep ``f(x)`` / samples in
    ``S_eps(x)``; ``prediction``: ``f(x)``; ``q``: the distribution's description (name, sample sizes).
    """

    eps: torch.Tensor
    kept: torch.Tensor
    drawn: torch.Tensor
    prediction: torch.Tensor
    q: dict = field(default_factory=dict)
    empty_value: float = 1.0

    @property
    def r(self) -> torch.Tensor:
        """The estimate ``kept / drawn`` (float64, ``N x E``); ``empty_value`` where ``drawn == 0``."""
        r = self.kept.double() / self.drawn.clamp_min(1).double()
        return torch.where(self.drawn > 0, r, torch.full_like(r, self.empty_value))

    def interval(self, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Two-sided ``1 - alpha`` Clopper-Pearson interval of each entry (NaN where ``drawn == 0``)."""
        return bernoulli_interval(self.kept, self.drawn, alpha)


class Perturbations:
    """A choice of Q: counts, per input and budget, the samples of ``S_eps(x)`` and those keeping ``f(x)``."""

    name = "q"

    def counts(self, model: Model, x: torch.Tensor, prediction: torch.Tensor, eps: torch.Tensor,
               generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kept, drawn)``, each ``N x E`` long."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Name and sample sizes, for reports."""
        return {"name": self.name}


class UniformBall(Perturbations):
    """Q uniform on the cube: ``samples`` uniform draws from ``B_eps(x)`` (intersected with the cube) per budget."""

    name = "uniform"

    def __init__(self, norm: str = "linf", samples: int = 100, box: bool = True) -> None:
        self.norm, self.samples, self.box = check_norm(norm), check_count(samples, "samples"), bool(box)

    def sample(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """``samples`` points per input: ``(N * samples) x ...`` (input-major)."""
        n, s = x.shape[0], self.samples
        rep = x.repeat_interleave(s, dim=0)
        if self.norm == "linf":
            u = draw(torch.rand, rep.shape, generator=generator, like=rep, dtype=rep.dtype)
            lo, hi = (rep - eps, rep + eps)
            if self.box:
                lo, hi = lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0)
            return lo + u * (hi - lo)
        d = x[0].numel()
        direction = draw(torch.randn, rep.shape, generator=generator, like=rep, dtype=rep.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (rep.ndim - 1))
        radius = draw(torch.rand, (n * s,), generator=generator, like=rep, dtype=rep.dtype) ** (1.0 / d) * eps
        out = rep + direction * radius.view(-1, *[1] * (rep.ndim - 1))
        return out.clamp(0.0, 1.0) if self.box else out

    def counts(self, model: Model, x: torch.Tensor, prediction: torch.Tensor, eps: torch.Tensor,
               generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, s = x.shape[0], self.samples
        kept = torch.zeros(n, eps.numel(), dtype=torch.long)
        chunk = max(1, batch_size // s)                   # inputs per forward chunk
        for j, e in enumerate(eps.tolist()):
            for i in range(0, n, chunk):
                points = self.sample(x[i:i + chunk], e, generator)
                same = predict(model, points, batch_size).view(-1, s) == prediction[i:i + chunk, None]
                kept[i:i + chunk, j] = same.sum(1).cpu()
        return kept, torch.full_like(kept, s)

    def describe(self) -> dict:
        return {"name": self.name, "norm": self.norm, "samples": self.samples, "box": self.box}


class DataNeighbours(Perturbations):
    """Q = the empirical distribution of ``reference`` (``M x ...`` inputs in ``[0, 1]``): ``S_eps(x)`` is every
    reference point within ``eps``. ``exclude_self`` (default) drops reference points at distance 0 (``x``
    itself when it belongs to the reference set, which would keep its prediction trivially)."""

    name = "data"

    def __init__(self, reference: torch.Tensor, norm: str = "l2", exclude_self: bool = True) -> None:
        self.reference = check_batch(reference, "reference").detach()
        self.norm, self.exclude_self = check_norm(norm), bool(exclude_self)

    def counts(self, model: Model, x: torch.Tensor, prediction: torch.Tensor, eps: torch.Tensor,
               generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(self.reference.shape[1:]) != tuple(x.shape[1:]):
            raise FrameworkError(f"reference points have shape {tuple(self.reference.shape[1:])}, the inputs "
                                 f"{tuple(x.shape[1:])}")
        ref = self.reference.to(x.device, x.dtype)
        ref_pred = predict(model, ref, batch_size)
        n = x.shape[0]
        kept = torch.zeros(n, eps.numel(), dtype=torch.long)
        drawn = torch.zeros_like(kept)
        grid = eps.to(x.device, torch.float64)
        for i in range(n):
            dist = distances(ref - x[i:i + 1], self.norm).double()
            usable = dist > 0 if self.exclude_self else torch.ones_like(dist, dtype=torch.bool)
            inside = (dist[None, :] <= grid[:, None]) & usable[None, :]          # E x M
            drawn[i] = inside.sum(1).cpu()
            kept[i] = (inside & (ref_pred == prediction[i])[None, :]).sum(1).cpu()
        return kept, drawn

    def describe(self) -> dict:
        return {"name": self.name, "norm": self.norm, "reference": int(self.reference.shape[0]),
                "exclude_self": self.exclude_self}


class OnManifold(Perturbations):
    """Q = P(X) through an autoencoder: ``samples`` draws ``dec(enc(x) + N(0, sigma^2 I))`` per input (clamped
    to ``[0, 1]``), of which those within ``eps`` of ``x`` form ``S_eps(x)``.

    ``encoder``: ``N x ... -> N x Z`` latent codes; ``decoder``: ``N x Z -> N x ...`` images (e.g. the
    ``encode`` / ``decode`` of :class:`threedb.robustness.framework.wae.WAE`).
    """

    name = "on_manifold"

    def __init__(self, encoder: Callable[[torch.Tensor], torch.Tensor],
                 decoder: Callable[[torch.Tensor], torch.Tensor], *, sigma: float = 0.06, samples: int = 200,
                 norm: str = "l2") -> None:
        self.encoder, self.decoder = encoder, decoder
        self.sigma = check_positive(sigma, "sigma")
        self.samples, self.norm = check_count(samples, "samples"), check_norm(norm)

    def counts(self, model: Model, x: torch.Tensor, prediction: torch.Tensor, eps: torch.Tensor,
               generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        from threedb.robustness.framework.wae import manifold_samples

        n, s = x.shape[0], self.samples
        kept = torch.zeros(n, eps.numel(), dtype=torch.long)
        drawn = torch.zeros_like(kept)
        grid = eps.to(x.device, torch.float64)
        chunk = max(1, batch_size // s)
        for i in range(0, n, chunk):
            xs = x[i:i + chunk]
            with torch.no_grad():
                points = manifold_samples(self.encoder, self.decoder, xs, samples=s, sigma=self.sigma,
                                          generator=generator)                       # n' x s x ...
            flat = points.flatten(0, 1)
            dist = distances(flat - xs.repeat_interleave(s, dim=0), self.norm).double().view(-1, s)
            same = predict(model, flat, batch_size).view(-1, s) == prediction[i:i + chunk, None]
            inside = dist[:, None, :] <= grid[None, :, None]                          # n' x E x s
            drawn[i:i + chunk] = inside.sum(2).cpu()
            kept[i:i + chunk] = (inside & same[:, None, :]).sum(2).cpu()
        return kept, drawn

    def describe(self) -> dict:
        return {"name": self.name, "norm": self.norm, "samples": self.samples, "sigma": self.sigma}


def basic_robustness(model: Model, x: torch.Tensor, eps: Sequence[float] | torch.Tensor, q: Perturbations, *,
                     seed: int = 0, batch_size: int = 1024, empty_value: float = 1.0) -> BasicRobustness:
    """``R_S(x, eps)`` (eq. 8) of ``model`` for every input of ``x`` and budget of ``eps`` under ``q``.

    The model is called in ``eval()`` mode (restored after). ``eps``: increasing budgets ``>= 0`` (at
    ``eps = 0`` the ball is ``{x}``). See the module docstring for ``empty_value``.
    """
    check_batch(x)
    grid = check_eps_grid(eps)
    check_count(batch_size, "batch_size")
    if not isinstance(q, Perturbations):
        raise FrameworkError(f"q must be a Perturbations (UniformBall, DataNeighbours, OnManifold), got "
                             f"{type(q).__name__}")
    if not (isinstance(empty_value, (int, float)) and (math.isnan(empty_value) or 0.0 <= empty_value <= 1.0)):
        raise FrameworkError(f"empty_value must be a probability in [0, 1] or nan, got {empty_value!r}")
    generator = torch.Generator().manual_seed(int(seed))
    x = x.detach()
    with eval_mode(model):
        prediction = predict(model, x, batch_size)
        kept, drawn = q.counts(model, x, prediction, grid, generator, batch_size)
    return BasicRobustness(grid, kept, drawn, prediction.cpu(), q.describe(), float(empty_value))
