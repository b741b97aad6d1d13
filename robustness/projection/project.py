"""Dataset projection (thesis ch. 4, app. C; algorithms.md f): the mixture weights over source groups whose
mixture is closest, in unbiased MMD^2, to a target sample, per target class, and resampling by them.

The job hands over features (``N x D``), integer labels and integer group ids (e.g. auxiliary classes,
k-means clusters of features, or 3DB render groups: one id per (model, HDRI, camera)); this module never
sees images or the simulator. See :mod:`.mmd` for the exact estimator and :mod:`.solvers` for the solvers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import torch

from .errors import ProjectionError
from .mmd import (CHUNK_ELEMENTS, MixtureMMD, check_bandwidth, check_features, median_bandwidth, source_blocks,
                  target_terms)
from .solvers import SOLVERS, SolverResult


@dataclass(frozen=True)
class ClassProjection:
    """The projection of one target class (``label``; ``None`` for a global projection).

    ``weights[i]`` is the share of source group ``group_ids[i]`` (``group_sizes[i]`` samples among this
    projection's candidates). ``mmd2_uniform`` is MMD^2 *before*: uniform weights over the groups
    (``1/k``, the thesis' Random baseline); ``mmd2_pooled`` weighs the groups by their sizes (all candidate
    samples alike); ``mmd2`` is *after*, at ``weights``. ``source_index`` holds the candidates' indices into the
    source arrays and ``source_group`` the position in ``group_ids`` of each."""

    label: int | None
    group_ids: torch.Tensor
    weights: torch.Tensor
    group_sizes: torch.Tensor
    n_target: int
    mmd2_uniform: float
    mmd2_pooled: float
    mmd2: float
    solver: SolverResult
    source_index: torch.Tensor
    source_group: torch.Tensor

    def weight_dict(self) -> dict[int, float]:
        """``{group id: weight}``."""
        return {int(g): float(w) for g, w in zip(self.group_ids, self.weights)}


@dataclass(frozen=True)
class ProjectionResult:
    """All class projections of one :func:`project_dataset` call, the kernel bandwidth used and the solver."""

    projections: tuple[ClassProjection, ...]
    bandwidth: float
    solver: str
    per_class: bool

    @property
    def labels(self) -> list[int | None]:
        """The target classes in order (``[None]`` for a global projection)."""
        return [p.label for p in self.projections]

    def __getitem__(self, label: int | None) -> ClassProjection:
        for p in self.projections:
            if p.label == label:
                return p
        raise KeyError(label)

    def weight_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(group_ids, W)``: every group id of any projection (sorted) and the ``classes x groups`` weights
        (0 where a class had no such group)."""
        ids = torch.unique(torch.cat([p.group_ids for p in self.projections]))
        matrix = torch.zeros(len(self.projections), len(ids), dtype=torch.float64)
        for row, p in enumerate(self.projections):
            matrix[row, torch.searchsorted(ids, p.group_ids)] = p.weights
        return ids, matrix

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (plain numbers and lists) for a report."""
        return {"bandwidth": self.bandwidth, "solver": self.solver, "per_class": self.per_class,
                "classes": [{"label": p.label, "n_target": p.n_target, "groups": p.group_ids.tolist(),
                             "group_sizes": p.group_sizes.tolist(), "weights": p.weights.tolist(),
                             "mmd2_uniform": p.mmd2_uniform, "mmd2_pooled": p.mmd2_pooled, "mmd2": p.mmd2,
                             "iterations": p.solver.iterations, "converged": p.solver.converged}
                            for p in self.projections]}


def _integers(values: Any, name: str, length: int) -> torch.Tensor:
    values = torch.as_tensor(values)
    if values.ndim != 1 or len(values) != length:
        raise ProjectionError(f"{name} must be a 1-D tensor of length {length} (one per sample), got shape "
                              f"{tuple(values.shape)}")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        if values.is_floating_point() and bool(torch.isnan(values).any()):
            raise ProjectionError(f"{name} contains NaN")
        if not (values.is_floating_point() and bool((values == values.round()).all())):
            raise ProjectionError(f"{name} must hold integers, got dtype {values.dtype}")
    return values.long().cpu()


def _step_size(step_size: float | Literal["auto"], objective: MixtureMMD) -> float:
    if step_size == "auto":
        # 1/L: the classical step of projected gradient (monotone descent); the thesis' 1 is step_size=1.0
        lipschitz = objective.lipschitz()
        return 1.0 if lipschitz <= 0.0 else 1.0 / lipschitz
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) \
            or step_size <= 0:
        raise ProjectionError(f"step_size must be 'auto' or a positive number, got {step_size!r}")
    return float(step_size)


def project_dataset(target_features: torch.Tensor, target_labels: torch.Tensor | None,
                    source_features: torch.Tensor, source_groups: torch.Tensor,
                    source_labels: torch.Tensor | None = None, *, per_class: bool = True,
                    bandwidth: float | None = None, solver: Literal["active_set", "pgd"] = "active_set",
                    groups: Sequence[int] | torch.Tensor | None = None,
                    step_size: float | Literal["auto"] = "auto", gradient: Literal["analytic", "central"] = "analytic",
                    tol: float = 1e-6, max_iter: int = 1000, solver_options: Mapping[str, Any] | None = None,
                    seed: int = 0, device: torch.device | str | None = None,
                    chunk_elements: int = CHUNK_ELEMENTS) -> ProjectionResult:
    """Project the target onto the span of the source groups: minimise ``MMD^2_u(w)`` over the simplex.

    Args:
        target_features: ``m x D`` target features (e.g. from :func:`.features.extract_features`).
        target_labels: ``m`` integer classes; needed when ``per_class`` (else ignored, may be ``None``).
        source_features: ``N x D`` auxiliary features; ``source_groups``: ``N`` integer group ids.
        source_labels: ``N`` integer classes of the auxiliary data, or ``None``. With ``per_class``, class
            ``c`` is projected onto the sources labelled ``c`` (their groups, restricted to those samples);
            without source labels every class is projected onto all groups (the projection assigns the
            labels, thesis C.2.4).
        per_class: one projection per target class (thesis) or one global projection (``label None``).
        bandwidth: the RBF ``sigma``; ``None``: the median heuristic over the pooled target and source
            features (at most 1000 points, drawn with ``seed``). The thesis' ``a`` is
            :func:`.mmd.bandwidth_from_scale` ``(a)``.
        solver: ``"active_set"`` (Algorithms 1-3) or ``"pgd"`` (Algorithm 4).
        groups: restrict the sources to these group ids (each must have samples).
        step_size: the solvers' step ``s``; ``"auto"``: ``1/L`` for ``L`` the gradient's Lipschitz constant on
            the simplex (:meth:`.mmd.MixtureMMD.lipschitz`), the classical step of projected gradient; the
            thesis' learning rate is ``1.0``, which converges slowly when the kernel is wide (``L << 1``) and
            makes PGD oscillate when ``L > 2``.
        gradient: ``"analytic"`` (``2Aw - 2b``) or ``"central"`` (the thesis' central differences: the same
            values up to rounding for this quadratic, at ``2k`` evaluations each).
        tol, max_iter, solver_options: passed to the solver (``solver_options``: e.g. ``epsilons``,
            ``momentum``, ``armijo``, ``backtrack`` of :func:`.solvers.active_set`).
        device: where kernels are computed (default: the source features' device); kernels in float64.

    Returns:
        A :class:`ProjectionResult`, projections in ascending class order. Every run with the same inputs
        and ``seed`` gives the same result (nothing else is random).

    Raises:
        ProjectionError: mismatched shapes, NaN features, a bandwidth ``<= 0``, target classes missing from
        the sources (named), groups with fewer than 2 samples (named), a class with fewer than 2 target
        samples, or bad solver options.
    """
    target = check_features(target_features, "target_features")
    source = check_features(source_features, "source_features", target.shape[1])
    if len(source) == 0:
        raise ProjectionError("source_features is empty")
    source_groups = _integers(source_groups, "source_groups", len(source))
    if source_labels is not None:
        source_labels = _integers(source_labels, "source_labels", len(source))
    if per_class:
        if target_labels is None:
            raise ProjectionError("per_class projection needs target_labels")
        target_labels = _integers(target_labels, "target_labels", len(target))
    if solver not in SOLVERS:
        raise ProjectionError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    if gradient not in ("analytic", "central"):
        raise ProjectionError(f"gradient must be 'analytic' or 'central', got {gradient!r}")
    options = dict(solver_options or {})
    allowed = {"active_set": {"epsilons", "momentum", "armijo", "backtrack", "max_backtracks"}, "pgd": set()}
    unknown = sorted(set(options) - allowed[solver])
    if unknown:
        raise ProjectionError(f"solver_options {unknown} are not options of solver {solver!r} "
                              f"(allowed: {sorted(allowed[solver])}; step_size, tol, max_iter are arguments)")
    device = torch.device(device) if device is not None else source.device

    candidates = torch.arange(len(source))
    if groups is not None:
        wanted = torch.unique(_integers(torch.as_tensor(groups).flatten(), "groups", torch.as_tensor(groups).numel()))
        empty = [int(g) for g in wanted if not bool((source_groups == g).any())]
        if empty:
            raise ProjectionError(f"group(s) {empty} have no source samples (empty groups)")
        candidates = candidates[torch.isin(source_groups, wanted)]
    sigma = check_bandwidth(bandwidth) if bandwidth is not None else \
        median_bandwidth(target, source[candidates], seed=seed)

    if per_class:
        classes = torch.unique(target_labels).tolist()
        if source_labels is not None:
            present = set(torch.unique(source_labels[candidates]).tolist())
            missing = [c for c in classes if c not in present]
            if missing:
                raise ProjectionError(f"target class(es) {missing} have no source samples with that label")
        values, counts = torch.unique(target_labels, return_counts=True)
        few = [int(c) for c, n in zip(values, counts) if n < 2]
        if few:
            raise ProjectionError(f"target class(es) {few} have fewer than 2 samples; the unbiased MMD needs 2")
    else:
        classes = [None]

    target_d = target.to(device=device, dtype=torch.float64)
    source_d = source.to(device=device, dtype=torch.float64)
    shared: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    projections = []
    for label in classes:
        if label is not None and source_labels is not None:
            pool = candidates[source_labels[candidates] == label]
        else:
            pool = candidates
        if shared is not None:
            group_ids, position, A, sizes = shared
        else:
            group_ids, position, sizes = torch.unique(source_groups[pool], return_inverse=True, return_counts=True)
            small = [f"{int(g)} ({int(s)} sample)" for g, s in zip(group_ids, sizes) if s < 2]
            if small:
                where = "" if label is None or source_labels is None else f" among the sources of class {label}"
                raise ProjectionError(f"source group(s) {', '.join(small[:10])}{where} have fewer than 2 samples; "
                                      "the unbiased MMD needs at least 2 per group (merge or drop them)")
            A, sizes = source_blocks(source_d[pool], position.to(device), len(group_ids), sigma,
                                     chunk_elements=chunk_elements)
            if source_labels is None or not per_class:
                shared = (group_ids, position, A, sizes)
        rows = torch.arange(len(target)) if label is None else (target_labels == label).nonzero().flatten()
        b, c = target_terms(target_d[rows.to(device)], source_d[pool], position.to(device), sizes, sigma,
                            chunk_elements=chunk_elements)
        objective = MixtureMMD(A, b, c, sizes, len(rows))
        k = len(group_ids)
        grad = objective.gradient if gradient == "analytic" else objective.central_gradient
        result = SOLVERS[solver](objective.value, grad, k, step_size=_step_size(step_size, objective), tol=tol,
                                 max_iter=max_iter, **options)
        uniform = torch.full((k,), 1.0 / k, dtype=torch.float64)
        pooled = sizes.double() / sizes.sum()
        projections.append(ClassProjection(
            label=label, group_ids=group_ids, weights=result.weights, group_sizes=sizes, n_target=len(rows),
            mmd2_uniform=objective.value(uniform), mmd2_pooled=objective.value(pooled), mmd2=result.objective,
            solver=result, source_index=pool, source_group=position))
    return ProjectionResult(tuple(projections), sigma, solver, bool(per_class))


@dataclass(frozen=True)
class Resampled:
    """Source samples drawn by :func:`resample`: ``indices`` into the source arrays, the target class each
    was drawn for (``labels``; ``None`` for a global projection) and its group id (``groups``)."""

    indices: torch.Tensor
    labels: torch.Tensor | None
    groups: torch.Tensor


def _allocate(total: int, sizes: list[int]) -> list[int]:
    """``total`` split in proportion to ``sizes`` by largest remainders (ties: first class first)."""
    quotas = [total * s / sum(sizes) for s in sizes]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:total - sum(counts)]:
        counts[i] += 1
    return counts


def resample(result: ProjectionResult, n: int | Mapping[int | None, int],
             generator: torch.Generator | int | None = None, *, replacement: bool = True) -> Resampled:
    """Draw a projected dataset: for each class, ``n_c`` source samples, each from group ``i`` with probability
    ``weights[i]`` and uniformly within the group (``replacement=False``: distinct samples per group; a group
    asked for more than it holds is an error).

    ``n`` is the total, split over the classes in proportion to their target counts (largest remainders), or
    a ``{label: count}`` mapping. ``generator``: a CPU ``torch.Generator`` or a seed (default seed 0). The
    draws come out class by class, in :attr:`ProjectionResult.labels` order.
    """
    if isinstance(generator, int) or generator is None:
        generator = torch.Generator().manual_seed(0 if generator is None else int(generator))
    if isinstance(n, Mapping):
        unknown = [label for label in n if label not in result.labels]
        if unknown:
            raise ProjectionError(f"resample counts name class(es) {unknown} that were not projected")
        counts = [n.get(label, 0) for label in result.labels]
    else:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ProjectionError(f"n must be a non-negative integer or a {{label: count}} mapping, got {n!r}")
        counts = _allocate(n, [p.n_target for p in result.projections])
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        raise ProjectionError(f"resample counts must be non-negative integers, got {counts}")
    indices, labels, group_ids = [], [], []
    for proj, count in zip(result.projections, counts):
        if count == 0:
            continue
        per_group = torch.bincount(torch.multinomial(proj.weights, count, replacement=True, generator=generator),
                                   minlength=len(proj.weights))
        for pos in per_group.nonzero().flatten().tolist():
            members = proj.source_index[proj.source_group == pos]
            want = int(per_group[pos])
            if replacement:
                pick = torch.randint(len(members), (want,), generator=generator)
            elif want > len(members):
                raise ProjectionError(f"class {proj.label}: group {int(proj.group_ids[pos])} has {len(members)} "
                                      f"samples but {want} were drawn without replacement; use replacement=True")
            else:
                pick = torch.randperm(len(members), generator=generator)[:want]
            indices.append(members[pick])
            labels.append(torch.full((want,), -1 if proj.label is None else proj.label, dtype=torch.long))
            group_ids.append(proj.group_ids[pos].repeat(want))
    if not indices:
        empty = torch.empty(0, dtype=torch.long)
        return Resampled(empty, None if not result.per_class else empty, empty)
    return Resampled(torch.cat(indices), torch.cat(labels) if result.per_class else None, torch.cat(group_ids))
