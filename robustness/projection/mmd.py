"""Kernel two-sample statistics for dataset projection: the RBF kernel, the median heuristic, and the unbiased
MMD^2 between a target sample and a *weighted mixture* of source groups, precomputed so that its value and
gradient in the weights cost ``O(k^2)`` for ``k`` groups.

**The estimator.** Let ``X = {x_1..x_m}`` be drawn iid from the target ``p`` and, for each group ``i``,
``Y_i = {y_i1..y_in_i}`` iid from the source ``q_i``, all independent; ``q_w = sum_i w_i q_i`` for ``w`` on the
simplex. Expanding

    MMD^2(p, q_w) = E k(x, x') - 2 sum_i w_i E k(x, y_i) + sum_ij w_i w_j E k(y_i, y_j')

(``x, x'`` independent from ``p``; ``y_i`` from ``q_i``; ``y_i, y_i'`` independent when ``i = j``), each
expectation is replaced by its unbiased sample mean:

    c    = 1/(m(m-1))       sum_{a != a'} k(x_a, x_a')                  (target U-statistic)
    b_i  = 1/(m n_i)        sum_{a, s}    k(x_a, y_is)                  (all pairs: independent samples)
    A_ij = 1/(n_i n_j)      sum_{s, t}    k(y_is, y_jt)     for i != j  (all pairs)
    A_ii = 1/(n_i(n_i - 1)) sum_{s != t}  k(y_is, y_it)                 (within-group U-statistic)

    MMD^2_u(w) = w^T A w - 2 b^T w + c,     gradient 2 A w - 2 b.

For every *fixed* ``w`` this is an unbiased estimate of ``MMD^2(p, q_w)`` (linearity of expectation; each
term is unbiased), and for ``w = e_i`` it is Gretton et al.'s (2012, eq. 3) ``MMD^2_u(X, Y_i)``. The only
diagonal correction is inside the target and inside each group: pairs of *different* groups are independent,
so their full block means are already unbiased. It is *not* the ``MMD^2_u`` of the pooled sample with
per-sample weights ``w_i / n_i`` (that would give within-group pairs ``w_i^2 / n_i^2`` instead of
``w_i^2 / (n_i(n_i-1))``, and the pooled sample is no iid sample of ``q_w`` anyway). Each group needs at least
2 samples and the target at least 2. The estimate may be negative; the minimum over ``w`` on the same samples
is optimistically biased (the weights are fitted to them).

Corrections to the thesis' eq. C.7 (algorithms.md f): the cross term is ``-2/(mn) sum k(x_i, y_j)`` (the
seed prints ``+``), the within-sample sums use the unbiased ``1/(m(m-1))`` over distinct pairs (C.7 prints
the biased ``1/m^2`` while calling it unbiased), and the objective is MMD^2 itself (no square root: the
unbiased estimate can be negative; where positive, MMD and MMD^2 have the same minimiser).

**The kernel.** ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` with bandwidth ``sigma > 0``; the thesis'
``exp(-a/2 ||x - y||^2)`` is ``sigma = 1/sqrt(a)`` (:func:`bandwidth_from_scale`; ``a = 500`` for vision,
in their encoder's feature scale).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import ProjectionError

#: kernel entries held at once while summing blocks (float64: 128 MiB)
CHUNK_ELEMENTS = 1 << 24


def check_bandwidth(bandwidth: float) -> float:
    """``bandwidth`` as a positive finite float, or :class:`ProjectionError`."""
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not math.isfinite(bandwidth) \
            or bandwidth <= 0:
        raise ProjectionError(f"bandwidth must be a positive number (the RBF kernel's sigma), got {bandwidth!r}")
    return float(bandwidth)


def bandwidth_from_scale(a: float) -> float:
    """The ``sigma`` of the thesis' kernel ``exp(-a * 0.5 * ||x - y||^2)``: ``1 / sqrt(a)`` (``a > 0``)."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
        raise ProjectionError(f"kernel scale a must be a positive number, got {a!r}")
    return 1.0 / math.sqrt(float(a))


def check_features(features: torch.Tensor, name: str, dim: int | None = None) -> torch.Tensor:
    """``features`` as an ``N x D`` floating tensor with finite entries (and ``D == dim`` when given)."""
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise ProjectionError(f"{name} must be a 2-D tensor (samples x feature dimension), got shape "
                              f"{tuple(features.shape)}")
    if dim is not None and features.shape[1] != dim:
        raise ProjectionError(f"{name} has feature dimension {features.shape[1]}, expected {dim} "
                              "(the target's)")
    if not features.is_floating_point():
        features = features.double()
    bad = ~torch.isfinite(features).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ProjectionError(f"{name} contains NaN or infinite values ({int(bad.sum())} rows, first {rows})")
    return features


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x_a - y_b||^2`` for all pairs (``len(x) x len(y)``), clamped at 0 against rounding."""
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return d2.clamp_min_(0.0)


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """The RBF kernel matrix ``exp(-||x_a - y_b||^2 / (2 bandwidth^2))`` (``len(x) x len(y)``)."""
    sigma = check_bandwidth(bandwidth)
    return torch.exp(squared_distances(x, y) * (-0.5 / sigma ** 2))


def median_bandwidth(*features: torch.Tensor, max_points: int = 1000, seed: int = 0) -> float:
    """The median heuristic (Gretton et al. 2012): ``sigma`` = the median Euclidean distance between distinct
    points of the pooled ``features`` (at most ``max_points`` of them, drawn with a generator seeded by
    ``seed``, so the result is deterministic)."""
    pooled = torch.cat([check_features(f, "features").double() for f in features])
    if len(pooled) < 2:
        raise ProjectionError("the median heuristic needs at least 2 points")
    if len(pooled) > max_points:
        gen = torch.Generator().manual_seed(seed)
        pooled = pooled[torch.randperm(len(pooled), generator=gen)[:max_points].to(pooled.device)]
    d2 = squared_distances(pooled, pooled)
    rows, cols = torch.triu_indices(len(pooled), len(pooled), offset=1, device=pooled.device)
    median = float(d2[rows, cols].median().sqrt())
    if median <= 0:
        raise ProjectionError("the median heuristic found all points identical; give a bandwidth")
    return median


def block_sums(x: torch.Tensor, x_group: torch.Tensor, kx: int, y: torch.Tensor, y_group: torch.Tensor, ky: int,
               bandwidth: float, *, same: bool = False, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """``S[a, b] = sum_{s in group a of x, t in group b of y} k(x_s, y_t)`` (``kx x ky``), computed in row chunks
    of at most ``chunk_elements`` kernel entries. ``same=True`` says ``x`` is ``y`` and leaves out the
    diagonal ``s = t`` (the U-statistic pairs)."""
    out = torch.zeros(kx, ky, dtype=x.dtype, device=x.device)
    rows = max(1, chunk_elements // max(1, len(y)))
    for start in range(0, len(x), rows):
        stop = min(start + rows, len(x))
        kernel = rbf_kernel(x[start:stop], y, bandwidth)
        if same:
            idx = torch.arange(stop - start, device=x.device)
            kernel[idx, idx + start] = 0.0
        by_column_group = torch.zeros(stop - start, ky, dtype=x.dtype, device=x.device).index_add_(1, y_group, kernel)
        out.index_add_(0, x_group[start:stop], by_column_group)
    return out


@dataclass(frozen=True)
class MixtureMMD:
    """The precomputed unbiased ``MMD^2_u(w) = w^T A w - 2 b^T w + c`` of a target against a mixture of ``k``
    source groups (module docstring). ``A`` is ``k x k`` symmetric, ``b`` is ``k``, all float64 on the CPU."""

    A: torch.Tensor
    b: torch.Tensor
    c: float
    group_sizes: torch.Tensor
    n_target: int

    @property
    def k(self) -> int:
        """The number of source groups."""
        return len(self.b)

    def value(self, w: torch.Tensor) -> float:
        """``MMD^2_u`` at weights ``w`` (length ``k``)."""
        w = w.to(self.A)
        return float(w @ (self.A @ w) - 2.0 * (self.b @ w) + self.c)

    def gradient(self, w: torch.Tensor) -> torch.Tensor:
        """The exact gradient ``2 A w - 2 b``."""
        w = w.to(self.A)
        return 2.0 * (self.A @ w - self.b)

    def central_gradient(self, w: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
        """The thesis' numerical gradient: central differences ``(f(w + h e_i) - f(w - h e_i)) / 2h``. The
        objective is quadratic, so this equals :meth:`gradient` up to rounding, at ``2k`` evaluations."""
        w = w.to(self.A)
        g = torch.empty_like(w)
        for i in range(self.k):
            e = torch.zeros_like(w)
            e[i] = h
            g[i] = (self.value(w + e) - self.value(w - e)) / (2.0 * h)
        return g

    def lipschitz(self, iterations: int = 100) -> float:
        """An estimate of the gradient's Lipschitz constant on the simplex's tangent space: the spectral norm
        of ``2 P A P`` (``P = I - 11^T/k``) by power iteration from a fixed start (times 1.05: power iteration
        approaches it from below)."""
        if self.k < 2:
            return 0.0

        def apply(v: torch.Tensor) -> torch.Tensor:
            v = v - v.mean()
            v = 2.0 * (self.A @ v)
            return v - v.mean()

        v = torch.randn(self.k, generator=torch.Generator().manual_seed(0), dtype=self.A.dtype)
        v = v - v.mean()
        norm = 0.0
        for _ in range(iterations):
            u = apply(v)
            norm = float(u.norm())
            if norm == 0.0:
                return 0.0
            v = u / norm
        return 1.05 * norm

    def with_target(self, b: torch.Tensor, c: float, n_target: int) -> "MixtureMMD":
        """The same source blocks against another target (``b``, ``c`` from :func:`target_terms`)."""
        return MixtureMMD(self.A, b, c, self.group_sizes, n_target)


def group_sizes_of(group: torch.Tensor, k: int) -> torch.Tensor:
    """Samples per group position ``0..k-1``; :class:`ProjectionError` when one has fewer than 2."""
    sizes = torch.bincount(group.cpu(), minlength=k)
    small = (sizes < 2).nonzero().flatten().tolist()
    if small:
        detail = ", ".join(f"{i} ({int(sizes[i])} samples)" for i in small[:10])
        raise ProjectionError(f"source group(s) {detail} have fewer than 2 samples; the unbiased MMD needs at "
                              "least 2 per group (empty groups cannot be projected onto)")
    return sizes


def source_blocks(source: torch.Tensor, group: torch.Tensor, k: int, bandwidth: float, *,
                  chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, group sizes)`` of the module docstring, for ``source`` (``N x D``) whose rows belong to group
    positions ``group`` (``N`` longs in ``0..k-1``)."""
    sizes = group_sizes_of(group, k)
    sums = block_sums(source, group, k, source, group, k, bandwidth, same=True, chunk_elements=chunk_elements)
    n = sizes.to(sums)
    denom = torch.outer(n, n) - torch.diag(n)          # n_i n_j off the diagonal, n_i (n_i - 1) on it
    A = (sums.double().cpu() / denom.double().cpu())
    return (A + A.T) / 2.0, sizes


def target_terms(target: torch.Tensor, source: torch.Tensor, group: torch.Tensor, group_sizes: torch.Tensor,
                 bandwidth: float, *, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, float]:
    """``(b, c)`` of the module docstring for ``target`` (``m x D``, ``m >= 2``) against the grouped source."""
    m, k = len(target), len(group_sizes)
    if m < 2:
        raise ProjectionError(f"the target has {m} sample(s); the unbiased MMD needs at least 2")
    zeros = torch.zeros(m, dtype=torch.long, device=target.device)
    cross = block_sums(target, zeros, 1, source, group, k, bandwidth, chunk_elements=chunk_elements)[0]
    b = cross.double().cpu() / (m * group_sizes.double())
    within = block_sums(target, zeros, 1, target, zeros, 1, bandwidth, same=True, chunk_elements=chunk_elements)
    return b, float(within[0, 0]) / (m * (m - 1))


def _stack_groups(groups: Sequence[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(groups) == 0:
        raise ProjectionError("no source groups given")
    checked = [check_features(g, f"source group {i}", dim) for i, g in enumerate(groups)]
    for i, g in enumerate(checked):
        if len(g) == 0:
            raise ProjectionError(f"source group {i} is empty")
    index = torch.cat([torch.full((len(g),), i, dtype=torch.long) for i, g in enumerate(checked)])
    return torch.cat(checked), index


def mixture_mmd(target: torch.Tensor, groups: Sequence[torch.Tensor], bandwidth: float, *,
                dtype: torch.dtype = torch.float64, chunk_elements: int = CHUNK_ELEMENTS) -> MixtureMMD:
    """Precompute :class:`MixtureMMD` for ``target`` (``m x D``) against source ``groups`` (a sequence of
    ``n_i x D`` tensors, ``n_i >= 2``), the kernel evaluated in ``dtype`` on the target's device."""
    check_bandwidth(bandwidth)
    target = check_features(target, "target features")
    source, index = _stack_groups(groups, target.shape[1])
    target, source = target.to(dtype), source.to(device=target.device, dtype=dtype)
    index = index.to(target.device)
    A, sizes = source_blocks(source, index, len(groups), bandwidth, chunk_elements=chunk_elements)
    b, c = target_terms(target, source, index, sizes, bandwidth, chunk_elements=chunk_elements)
    return MixtureMMD(A, b, c, sizes, len(target))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """Gretton et al.'s two-sample ``MMD^2_u(X, Y)`` (2012, eq. 3) from full kernel matrices, in float64."""
    x, y = check_features(x, "x").double(), check_features(y, "y", x.shape[1]).double()
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ProjectionError("MMD^2_u needs at least 2 samples on each side")
    kxx, kyy, kxy = rbf_kernel(x, x, bandwidth), rbf_kernel(y, y, bandwidth), rbf_kernel(x, y, bandwidth)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2.0 * kxy.mean())


def mixture_mmd2_direct(target: torch.Tensor, groups: Sequence[torch.Tensor], weights: torch.Tensor,
                        bandwidth: float) -> float:
    """Reference computation of ``MMD^2_u(w)`` (the test oracle; ``O(n^2)`` memory): one kernel matrix over the
    pooled samples, summed against an explicit per-pair coefficient matrix built from the definition."""
    target = check_features(target, "target features").double()
    source, index = _stack_groups(groups, target.shape[1])
    source = source.double()
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.shape != (len(groups),):
        raise ProjectionError(f"weights must have one entry per group ({len(groups)}), got {tuple(weights.shape)}")
    m = len(target)
    sizes = torch.bincount(index, minlength=len(groups)).double()
    pooled = torch.cat([target, source])
    kernel = rbf_kernel(pooled, pooled, bandwidth)
    # per-sample coefficient of each pair (s, t); the diagonal s == t never counts
    coef = torch.zeros_like(kernel)
    coef[:m, :m] = 1.0 / (m * (m - 1))
    per_sample = weights[index] / sizes[index]                      # w_i / n_i for a source sample of group i
    coef[:m, m:] = -per_sample[None, :] / m
    coef[m:, :m] = -per_sample[:, None] / m
    same = index[:, None] == index[None, :]
    within = (weights[index] ** 2 / (sizes[index] * (sizes[index] - 1)))[:, None].expand_as(same)
    coef[m:, m:] = torch.where(same, within, torch.outer(per_sample, per_sample))
    coef.fill_diagonal_(0.0)
    return float((coef * kernel).sum())
