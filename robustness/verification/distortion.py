"""Minimum adversarial distortion (Tjeng et al. 2019): the smallest L-inf or L1 perturbation of ``x`` inside
``[0, 1]`` that changes the decision, as a MILP over the network's encoding.

``min d(x', x)`` subject to: some class ``j`` of the candidates (every other class, or a target set)
scores at least the label, ``y_j - y_label >= -M_j (1 - b_j)`` with one binary per candidate and
``sum b_j = 1``, where ``M_j`` is a sound upper bound of ``y_label - y_j`` (asymmetric, from the bounds).
L-inf: one variable ``e >= |x'_i - x_i|``; L1: one ``t_i >= |x'_i - x_i|`` per input. The bounds are
computed on the restricted domain ``||x' - x||_inf <= max_eps``, so the answer is exact up to ``max_eps``:
``robust`` means no adversarial example within it.

:func:`bisect_distortion` brackets the L-inf minimum by complete verification at shrinking radii
instead (each on its own, smaller, restricted domain): the faster route on convolutional networks.

A run stopped early still gives a valid bracket: ``lower_bound`` (the MILP's dual bound) ``<=`` the true
minimum ``<=`` ``distortion`` (the best example found), ``gap`` their difference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Literal, Optional

import numpy as np

from threedb.robustness.verification.bounds import output_lower_bounds
from threedb.robustness.verification.milp import NetworkModel
from threedb.robustness.verification.network import Network
from threedb.robustness.verification.spec import local_robustness
from threedb.robustness.verification.verifier import (Checker, Deadline, VerifierOptions, _Expired, attack_box,
                                                      compute_bounds, verify)

DistortionStatus = Literal["optimal", "timeout", "misclassified", "robust"]


@dataclass
class DistortionResult:
    """``distortion``: the best adversarial example's distance (``None`` if none found); ``lower_bound``: proven."""

    status: DistortionStatus
    norm: str
    distortion: Optional[float]
    lower_bound: float
    seconds: float
    adversarial: Optional[np.ndarray] = field(default=None, repr=False)
    predicted: Optional[int] = None     #: the class ``check`` gives the adversarial example (or ``x``)
    margin: Optional[float] = None      #: ``max_j y_j - y_label`` there (``>= 0`` up to solver tolerance)
    stats: dict = field(default_factory=dict)

    @property
    def gap(self) -> Optional[float]:
        return None if self.distortion is None else max(self.distortion - self.lower_bound, 0.0)

    def summary(self) -> dict:
        return {"status": self.status, "norm": self.norm, "distortion": self.distortion,
                "lower_bound": self.lower_bound, "gap": self.gap, "seconds": round(self.seconds, 4),
                "predicted": self.predicted, "margin": self.margin, **self.stats}


def minimum_distortion(network: Network, x: np.ndarray, label: int, *, norm: Literal["linf", "l1"] = "linf",
                       max_eps: float = 1.0, targets: Optional[Iterable[int]] = None,
                       options: Optional[VerifierOptions] = None, check: Optional[Checker] = None
                       ) -> DistortionResult:
    """The minimum ``norm`` distortion of ``x`` (flat, in ``[0, 1]``) that makes the network predict another
    class than ``label`` (one of ``targets`` when given), searched within ``||x' - x||_inf <= max_eps``."""
    if norm not in ("linf", "l1"):
        raise ValueError(f"unknown norm {norm!r} for minimum distortion: use linf or l1")
    options = options or VerifierOptions()
    check = check or network
    begin = time.perf_counter()
    deadline = Deadline(options.timeout)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    k = network.out_size
    candidates = _candidates(k, label, targets)
    wrong = _misclassified(check, x, label, candidates, norm)
    if wrong is not None:
        return wrong
    stats: dict = {}
    # an attack's example bounds the minimum from above: the MILP then searches only that far (a smaller
    # restricted domain: tighter bounds) and starts from it
    incumbent = _attack_incumbent(network, x, label, candidates, norm, max_eps, options, check) \
        if options.attack else None
    radius = max_eps
    if incumbent is not None:
        radius = min(max_eps, float(np.abs(incumbent - x).max()))
        stats["attack_distortion"] = _distance(incumbent - x, norm)
    lower, upper = np.clip(x - radius, 0.0, 1.0), np.clip(x + radius, 0.0, 1.0)
    try:
        bounds = compute_bounds(network, lower, upper, options, deadline, stats)
    except _Expired:
        return DistortionResult("timeout", norm, None, 0.0, time.perf_counter() - begin, stats=stats)
    # M_j: an upper bound of y_label - y_j; a class that can never reach the label is dropped
    reachable, big = [], []
    for j in candidates:
        row = np.zeros(k)
        row[label], row[j] = 1.0, -1.0
        if output_lower_bounds(network, bounds, row, symbolic=options.symbolic)[0] > 0:
            continue
        reachable.append(j)
        big.append(max(-float(output_lower_bounds(network, bounds, -row, symbolic=options.symbolic)[0]), 0.0))
    stats["classes_reachable"] = len(reachable)
    if not reachable:
        return DistortionResult("robust", norm, None, float(max_eps), time.perf_counter() - begin, stats=stats)
    model = NetworkModel(network, bounds, asymmetric=options.asymmetric, threads=options.threads)
    model.encode_until(len(network.layers))
    inputs, out = model.units[0].var, model.units[-1]
    n = x.size
    if norm == "linf":
        (e,) = model.add_cols(np.zeros(1), np.array([max_eps]))
        for i in range(n):
            model.add_row(-np.inf, x[i], [inputs[i], e], [1.0, -1.0])    # x'_i - e <= x_i
            model.add_row(x[i], np.inf, [inputs[i], e], [1.0, 1.0])      # x'_i + e >= x_i
        objective = [e]
    else:
        t = model.add_cols(np.zeros(n), np.full(n, max_eps))
        for i in range(n):
            model.add_row(-x[i], np.inf, [t[i], inputs[i]], [1.0, -1.0])  # t_i >= x_i - x'_i
            model.add_row(x[i], np.inf, [t[i], inputs[i]], [1.0, 1.0])    # t_i >= x'_i - x_i
        objective = list(t)
    binaries = model.add_binaries(len(reachable)) if len(reachable) > 1 else []
    if len(reachable) > 1:
        model.add_row(1.0, 1.0, binaries, np.ones(len(reachable)))
    for index, (j, m) in enumerate(zip(reachable, big)):
        row = np.zeros(k)
        row[j], row[label] = 1.0, -1.0
        if len(reachable) > 1:
            model.add_linear_row(out, row, -m, np.inf, [binaries[index]], [-m])   # y_j - y_l - m b_j >= -m
        else:
            model.add_linear_row(out, row, 0.0, np.inf)
    model.set_integer(True)
    model.set_objective(objective, np.ones(len(objective)), maximize=False)
    if incumbent is not None:
        start_point = model.point(incumbent)
        delta = np.abs(incumbent - x)
        start_point[objective] = [float(delta.max())] if norm == "linf" else delta
        if len(reachable) > 1:
            y_inc = network(incumbent)
            start_point[binaries] = 0.0
            start_point[binaries[int(np.argmax(y_inc[reachable]))]] = 1.0
        model.set_start(start_point)
    start = time.perf_counter()
    result = model.solve(time_limit=max(deadline.left(), 1e-3))
    stats["milp_seconds"] = round(time.perf_counter() - start, 4)
    elapsed = time.perf_counter() - begin
    if result.status == "infeasible":
        if incumbent is not None:   # only numerically possible: the example is on the boundary
            return DistortionResult("optimal", norm, stats["attack_distortion"], stats["attack_distortion"],
                                    elapsed, incumbent, int(np.argmax(check(incumbent))), None, stats)
        return DistortionResult("robust", norm, None, float(max_eps), elapsed, stats=stats)
    lower_bound = max(result.bound, 0.0) if result.bound is not None else 0.0
    if result.solution is None:
        return DistortionResult("timeout", norm, None, lower_bound, elapsed, stats=stats)
    adversarial = np.clip(model.values(result.solution, 0), lower, upper)
    y_adv = np.asarray(check(adversarial), dtype=np.float64).reshape(-1)
    others = y_adv[reachable]
    delta = adversarial - x
    distortion = _distance(delta, norm)
    status: DistortionStatus = "optimal" if result.status == "optimal" else "timeout"
    return DistortionResult(status, norm, distortion, min(lower_bound, distortion), elapsed, adversarial,
                            int(y_adv.argmax()), float(others.max() - y_adv[label]), stats)


def bisect_distortion(network: Network, x: np.ndarray, label: int, *, max_eps: float = 1.0,
                      targets: Optional[Iterable[int]] = None, tolerance: float = 1e-4,
                      options: Optional[VerifierOptions] = None, check: Optional[Checker] = None,
                      step_share: float = 0.25) -> DistortionResult:
    """The minimum L-inf distortion bracketed by complete verification at shrinking radii: each ``unsat`` at
    ``eps`` proves ``lower_bound >= eps``; each confirmed ``sat`` gives an example, whose distance is the new
    ``distortion``. Every question is asked on its own restricted domain (the ball of that radius), which
    keeps the MILPs small near the answer, where one MILP over ``max_eps`` struggles. Stops when the gap is
    below ``tolerance`` or the budget (``options.timeout``) is spent (status ``timeout``, bracket still valid).

    Close to the answer a question can get hard both ways (a counterexample just inside the ball that the
    attack and the search miss). Each question therefore gets at most ``step_share`` of the time left, and
    when one runs out, one minimum-distortion MILP (:func:`minimum_distortion`) over the ball of the current
    ``distortion`` (small now, so its bounds are tight) gets the rest; the two brackets are intersected.
    (WK17a sample 9: the bracket [0.09375, 0.09531] in about 40 s, then the MILP's optimum 0.0940021 with
    lower bound 0.0940011, the known 0.0940014.)"""
    options = options or VerifierOptions()
    check = check or network
    begin = time.perf_counter()
    deadline = Deadline(options.timeout)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    k = network.out_size
    candidates = _candidates(k, label, targets)
    wrong = _misclassified(check, x, label, candidates, "linf")
    if wrong is not None:
        return wrong
    lower, upper, best = 0.0, float(max_eps), None
    steps: list[dict] = []
    eps = float(max_eps)
    stuck = False
    while deadline.left() > 0:
        step = replace(options, timeout=deadline.left() * (step_share if best is not None else 1.0))
        result = verify(network, local_robustness(x, label, eps, k, targets=candidates), step, check=check)
        steps.append({"eps": eps, "status": result.status, "seconds": round(result.seconds, 3)})
        if result.status == "unsat":
            lower = eps
        elif result.status == "sat":
            best = result.counterexample
            upper = min(eps, float(np.abs(best - x).max()))
        else:
            stuck = result.status == "timeout" and best is not None
            break
        if best is None and lower >= max_eps:
            return DistortionResult("robust", "linf", None, float(max_eps), time.perf_counter() - begin,
                                    stats={"steps": steps})
        if upper - lower <= tolerance:
            break
        eps = (lower + upper) / 2
    if stuck and deadline.left() > 0:
        final = minimum_distortion(network, x, label, norm="linf", max_eps=upper, targets=candidates,
                                   options=replace(options, timeout=deadline.left()), check=check)
        steps.append({"eps": upper, "status": f"milp {final.status}", "seconds": round(final.seconds, 3)})
        lower = max(lower, float(final.lower_bound))
        if final.adversarial is not None and final.distortion is not None and final.distortion < upper:
            best, upper = final.adversarial, float(np.abs(final.adversarial - x).max())
    elapsed = time.perf_counter() - begin
    status: DistortionStatus = "optimal" if best is not None and upper - lower <= tolerance else "timeout"
    if best is None:
        return DistortionResult(status, "linf", None, lower, elapsed, stats={"steps": steps})
    y_adv = np.asarray(check(best), dtype=np.float64).reshape(-1)
    return DistortionResult(status, "linf", upper, lower, elapsed, best, int(y_adv.argmax()),
                            float(y_adv[candidates].max() - y_adv[label]), {"steps": steps})


def _candidates(k: int, label: int, targets: Optional[Iterable[int]]) -> list[int]:
    """The classes an adversarial example may reach: every other one, or the targets."""
    return sorted(set(range(k)) - {label} if targets is None else set(int(t) for t in targets) - {label})


def _misclassified(check: Checker, x: np.ndarray, label: int, candidates: list[int],
                   norm: str) -> Optional[DistortionResult]:
    """The zero-distortion answer when ``x`` itself is already predicted as one of the candidates."""
    start = time.perf_counter()
    y = np.asarray(check(x), dtype=np.float64).reshape(-1)
    predicted = int(y.argmax())
    if predicted != label and predicted in candidates:
        return DistortionResult("misclassified", norm, 0.0, 0.0, time.perf_counter() - start, x.copy(), predicted,
                                float(y[predicted] - y[label]))
    return None


def _distance(delta: np.ndarray, norm: str) -> float:
    return float(np.abs(delta).max() if norm == "linf" else np.abs(delta).sum())


def _attack_incumbent(network: Network, x: np.ndarray, label: int, candidates: list[int], norm: str,
                      max_eps: float, options: VerifierOptions, check: Checker) -> Optional[np.ndarray]:
    """An adversarial example within ``max_eps`` found by PGD (confirmed by ``check``), or ``None``.
    For L1 the L-inf attack's example is still an upper bound (its L1 norm), if a loose one."""
    spec = local_robustness(x, label, max_eps, network.out_size, targets=candidates)
    adv = attack_box(network, spec, options)
    y = np.asarray(check(adv), dtype=np.float64).reshape(-1)
    if int(y.argmax()) in candidates and y.max() > y[label]:
        return adv
    return None


__all__ = ["DistortionResult", "bisect_distortion", "minimum_distortion"]
