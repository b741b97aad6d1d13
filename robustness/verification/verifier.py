"""The complete verifier: attack, bounds, progressive tightening, MILP, and a confirmed answer.

For each box of a specification (see :mod:`.spec`), cheapest step first:

1. a quick attack (:class:`threedb.robustness.attacks.PGD` on the box, maximising the specification's
   violation) answers ``sat`` when it finds a counterexample;
2. interval and symbolic bounds (:mod:`.bounds`) over the *restricted domain* (the box itself);
   an output disjunct whose constraint has a positive lower bound cannot be met and is dropped;
3. progressive tightening, layer by layer: each ReLU input the bounds leave unstable gets an LP
   bound (upper first; stop as soon as the sign is decided), then, with ``tighten="milp"``, a
   time-limited MILP bound; tighter bounds mean fewer binaries and smaller big-M constants;
4. on chains of affine layers and ReLUs, branch and bound on ReLU splits (:mod:`.bab`) per remaining
   disjunct, in ``bab_share`` of the time left; its box-corner candidates find most counterexamples at
   once, and it proves the easier disjuncts;
5. one MILP per disjunct still open (HiGHS), stopping at its first feasible point.

``sat`` is reported only with a counterexample in the box whose outputs, computed by ``check``
(e.g. onnxruntime on the original file; default: this network in ``float64``), meet the disjunct;
a MILP point that does not is polished by a few attack steps and, failing that, the MILP is asked
again for a strict margin; if still unconfirmed the answer is ``unknown``, never ``sat``.
``unsat`` comes only from sound bounds or a MILP proof of infeasibility. ``timeout`` when the budget
runs out, ``error`` (with the message) when a step fails.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch

from threedb.robustness.attacks import PGD
from threedb.robustness.attacks.base import Task
from threedb.robustness.verification.bab import BabOptions, branch_and_bound, supports
from threedb.robustness.verification.bounds import (Bounds, interval_bounds, layer_interval, output_lower_bounds,
                                                    symbolic_bounds, unstable_counts)
from threedb.robustness.verification.milp import NetworkModel
from threedb.robustness.verification.network import Affine, Network
from threedb.robustness.verification.spec import Specification

Status = Literal["sat", "unsat", "timeout", "unknown", "error"]
Checker = Callable[[np.ndarray], np.ndarray]


@dataclass
class VerifierOptions:
    """How hard and how to try. The ``False``/``"none"`` settings exist for the ablation (thesis Table 5.1)."""

    timeout: float = 120.0            #: seconds for the whole instance
    attack: bool = True               #: PGD before any bound
    attack_steps: int = 40
    attack_restarts: int = 3
    symbolic: bool = True             #: backward linear bounds on top of intervals
    tighten: Literal["none", "lp", "milp"] = "lp"
    complete: Literal["bab", "milp"] = "bab"   #: the last step: branch and bound (ReLU chains; else MILP) or MILP
    bab_share: float = 0.9           #: with ``bab``: its share of the time left; the MILP gets the rest (1: no MILP)
    progressive: bool = True          #: stop tightening a unit once its sign is decided (False: LP on every unit)
    milp_unit_time: float = 0.5       #: seconds per unit bound with ``tighten="milp"``
    restricted_domain: bool = True    #: bounds on the box itself (False: on ``domain``, e.g. all of [0, 1])
    asymmetric: bool = True           #: big-M constants from (l, u) (False: symmetric M = max(-l, u))
    threads: int = 1
    seed: int = 0
    bab: BabOptions = field(default_factory=BabOptions)

    def describe(self) -> dict:
        return asdict(self)


@dataclass
class VerificationResult:
    """The answer for one instance, what was found, and where the time went."""

    status: Status
    seconds: float
    counterexample: Optional[np.ndarray] = field(default=None, repr=False)   #: flat input (sat)
    output: Optional[np.ndarray] = field(default=None, repr=False)           #: its outputs, from ``check``
    method: str = ""                 #: the step that decided: attack, bounds, milp
    message: str = ""
    stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 4), "method": self.method,
                "message": self.message, **self.stats}


class Deadline:
    """Seconds left of a budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def expired(self) -> bool:
        return self.left() <= 0


class _Expired(Exception):
    pass


# --------------------------------------------------------------------------- the attack

class SpecificationTask(Task):
    """The attacker's goal for a specification: make some disjunct's constraints hold.

    The model seen by the attack maps ``u in [0, 1]^n`` to the box (``x = lower + (upper - lower) u``),
    so the box is the L-inf ball of radius 0.5 around ``u = 0.5``. Loss: ``-min_k max_r (C_k y - d_k)_r``.
    """

    name = "specification"

    def __init__(self, spec: Specification, dtype: torch.dtype) -> None:
        self.spec = spec
        self.c = [torch.tensor(c, dtype=dtype) for c, _ in spec.disjuncts]
        self.d = [torch.tensor(d, dtype=dtype) for _, d in spec.disjuncts]

    def violation(self, output: torch.Tensor) -> torch.Tensor:
        per_disjunct = [(output @ c.T - d).amax(1) for c, d in zip(self.c, self.d)]
        return torch.stack(per_disjunct, 1).amin(1)

    def loss(self, output, y, kind="ce", target=None):   # noqa: ANN001 - the Task signature
        return -self.violation(output).float()   # the attacks keep float32 losses

    def success(self, output, y, target=None):   # noqa: ANN001
        return self.violation(output) <= 0

    def score(self, output, y):   # noqa: ANN001
        return self.violation(output)


class _BoxModel(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, lower: np.ndarray, upper: np.ndarray) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("lower", torch.tensor(lower, dtype=torch.float64))
        self.register_buffer("width", torch.tensor(upper - lower, dtype=torch.float64))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.net(self.lower + self.width * u.reshape(u.shape[0], -1).to(torch.float64))


def attack_box(network: Network, spec: Specification, options: VerifierOptions,
               start: Optional[np.ndarray] = None) -> np.ndarray:
    """A candidate counterexample (a flat input in the box): PGD over the whole box from random starts,
    or, given ``start`` (a MILP solution to polish), small PGD steps from that point."""
    width = spec.upper - spec.lower
    model = _BoxModel(network.to_torch(torch.float64), spec.lower, spec.upper).eval()
    task = SpecificationTask(spec, torch.float64)
    n = spec.n_inputs
    dummy = torch.zeros(1, dtype=torch.long)
    if start is None:
        u0 = torch.full((1, 1, 1, n), 0.5, dtype=torch.float64)   # the box is the ball of radius 0.5 around it
        attack = PGD(eps=0.5, steps=options.attack_steps, restarts=options.attack_restarts, task=task,
                     seed=options.seed, gradient_check=False)
    else:
        u = np.where(width > 0, (start - spec.lower) / np.where(width > 0, width, 1.0), 0.5)
        u0 = torch.tensor(np.clip(u, 0, 1), dtype=torch.float64).reshape(1, 1, 1, n)
        attack = PGD(eps=1.0, steps=options.attack_steps, step_size=0.01, random_start=False, task=task,
                     seed=options.seed, gradient_check=False)
    u = attack(model, u0, dummy).adv.reshape(-1).numpy()
    return np.clip(spec.lower + width * u, spec.lower, spec.upper)


# --------------------------------------------------------------------------- bounds and tightening

def compute_bounds(network: Network, lower: np.ndarray, upper: np.ndarray, options: VerifierOptions,
                   deadline: Deadline, stats: dict) -> Bounds:
    """Bounds of every layer on the box ``[lower, upper]``: intervals, symbolic, then progressive tightening."""
    start = time.perf_counter()
    bounds = interval_bounds(network, lower, upper)
    stats["unstable_interval"] = unstable_counts(network, bounds)
    if options.symbolic:
        bounds = symbolic_bounds(network, lower, upper, known=bounds)
        stats["unstable_symbolic"] = unstable_counts(network, bounds)
    stats["bounds_seconds"] = round(time.perf_counter() - start, 4)
    if options.tighten == "none" or not network.relu_layers():
        stats["unstable"] = unstable_counts(network, bounds)
        return bounds
    start = time.perf_counter()
    model = NetworkModel(network, bounds, asymmetric=options.asymmetric, threads=options.threads)
    solves = 0
    relus = network.relu_layers()
    for r_index, k in enumerate(relus):
        if r_index > 0 and options.symbolic:
            bounds = symbolic_bounds(network, lower, upper, known=bounds, start=k)
        elif r_index > 0:
            bounds = _intervals_from(network, bounds, k)
        model.bounds = bounds
        model.encode_until(k)
        lo, hi = bounds[k]
        if k == 1 and isinstance(network.layers[0], Affine):
            continue   # intervals are exact on an affine image of the box: nothing to tighten
        rows = np.flatnonzero((lo < 0) & (hi > 0)) if options.progressive else np.arange(lo.size)
        for integer in ([False, True] if options.tighten == "milp" else [False]):
            model.set_integer(integer)
            limit = options.milp_unit_time if integer else np.inf
            for i in rows:
                if options.progressive and not (lo[i] < 0 < hi[i]):
                    continue
                if deadline.expired():
                    raise _Expired
                up = model.bound_unit(k, int(i), True, time_limit=min(limit, deadline.left()))
                solves += 1
                if up is not None:
                    hi[i] = min(hi[i], up)
                if options.progressive and hi[i] <= 0:
                    continue
                down = model.bound_unit(k, int(i), False, time_limit=min(limit, deadline.left()))
                solves += 1
                if down is not None:
                    lo[i] = max(lo[i], down)
            rows = np.flatnonzero((lo < 0) & (hi > 0)) if options.progressive else rows
        model.set_integer(False)
    last = len(network.layers)
    bounds = symbolic_bounds(network, lower, upper, known=bounds, start=last) if options.symbolic \
        else _intervals_from(network, bounds, last)
    stats["tighten_solves"] = solves
    stats["tighten_seconds"] = round(time.perf_counter() - start, 4)
    stats["unstable"] = unstable_counts(network, bounds)
    return bounds


def _intervals_from(network: Network, bounds: Bounds, start: int) -> Bounds:
    out = [(lo.copy(), hi.copy()) for lo, hi in bounds]
    for k in range(max(start - 1, 0), len(network.layers)):
        lo, hi = layer_interval(network.layers[k], *out[k])
        out[k + 1] = (np.maximum(out[k + 1][0], lo), np.minimum(out[k + 1][1], hi))
    return out


# --------------------------------------------------------------------------- the whole procedure

def verify(network: Network, specs: Sequence[Specification] | Specification,
           options: Optional[VerifierOptions] = None, *, check: Optional[Checker] = None,
           domain: Optional[tuple[np.ndarray, np.ndarray]] = None) -> VerificationResult:
    """Decide whether any box of ``specs`` holds a counterexample (``sat``) or none does (``unsat``).

    ``check(x) -> y`` computes the outputs of the *original* model for a flat input (sat is reported only
    if they meet the specification); ``domain``: the box bounds are computed on when
    ``options.restricted_domain`` is off (default ``[0, 1]`` for every input)."""
    options = options or VerifierOptions()
    specs = [specs] if isinstance(specs, Specification) else list(specs)
    check = check or network
    deadline = Deadline(options.timeout)
    begin = time.perf_counter()
    stats: dict = {"boxes": len(specs)}
    undecided = False
    try:
        for spec in specs:
            spec.check_network(network.in_size, network.out_size, network.source)
            outcome = _verify_box(network, spec, options, check, deadline, stats, domain)
            if outcome is not None and outcome.status == "sat":
                outcome.seconds = time.perf_counter() - begin
                outcome.stats = stats
                return outcome
            if outcome is not None:
                undecided = True
                last = outcome
    except _Expired:
        return VerificationResult("timeout", time.perf_counter() - begin, stats=stats,
                                  message=f"no answer within {options.timeout:g} s")
    if undecided:
        last.seconds, last.stats = time.perf_counter() - begin, stats
        return last
    return VerificationResult("unsat", time.perf_counter() - begin, method=stats.get("decided_by", "milp"),
                              stats=stats)


def _confirmed(spec: Specification, check: Checker, x: np.ndarray) -> Optional[np.ndarray]:
    """The outputs of ``check`` at ``x`` if ``x`` is in the box and they meet the specification, else ``None``."""
    if not spec.contains(x):
        return None
    y = np.asarray(check(x), dtype=np.float64).reshape(-1)
    return y if spec.violated_by(y) else None


def _sat(x: np.ndarray, y: np.ndarray, method: str) -> VerificationResult:
    return VerificationResult("sat", 0.0, counterexample=x, output=y, method=method)


def _verify_box(network: Network, spec: Specification, options: VerifierOptions, check: Checker,
                deadline: Deadline, stats: dict, domain: Optional[tuple[np.ndarray, np.ndarray]]
                ) -> Optional[VerificationResult]:
    """``None`` when the box is proved safe; a ``sat`` result; or an undecided one (timeout / unknown)."""
    if options.attack:
        start = time.perf_counter()
        x = attack_box(network, spec, options)
        y = _confirmed(spec, check, x)
        stats["attack_seconds"] = round(stats.get("attack_seconds", 0.0) + time.perf_counter() - start, 4)
        if y is not None:
            return _sat(x, y, "attack")
    if deadline.expired():
        raise _Expired
    lower, upper = spec.lower, spec.upper
    if not options.restricted_domain:
        lower, upper = domain if domain is not None else (np.zeros_like(lower), np.ones_like(upper))
        lower, upper = np.minimum(lower, spec.lower), np.maximum(upper, spec.upper)
    bounds = compute_bounds(network, lower, upper, options, deadline, stats)
    if not options.restricted_domain:
        # the unrestricted bounds hold on the box too; the MILP's inputs are the box
        bounds[0] = (spec.lower.copy(), spec.upper.copy())
    remaining = []
    for c, d in spec.disjuncts:
        slack = output_lower_bounds(network, bounds, c, symbolic=options.symbolic) - d
        if not np.any(slack > 0):
            remaining.append((float(slack.max()), c, d))
    stats["disjuncts_left"] = stats.get("disjuncts_left", 0) + len(remaining)
    if not remaining:
        stats.setdefault("decided_by", "bounds")
        return None
    milp_start = time.perf_counter()
    ordered = [(c, d) for _, c, d in sorted(remaining, key=lambda item: item[0])]
    try:
        if options.complete == "bab" and supports(network):
            ordered = _bab_phase(network, spec, bounds, ordered, options, check, deadline, stats)
            if isinstance(ordered, VerificationResult):
                return ordered
        if ordered:
            stats["decided_by"] = "milp"
        for c, d in ordered:
            outcome = _solve_disjunct(network, spec, bounds, c, d, options, check, deadline)
            if outcome is not None:
                return outcome
    finally:
        stats["milp_seconds"] = round(stats.get("milp_seconds", 0.0) + time.perf_counter() - milp_start, 4)
    return None


def _bab_phase(network: Network, spec: Specification, bounds: Bounds, disjuncts: list, options: VerifierOptions,
               check: Checker, deadline: Deadline, stats: dict) -> list | VerificationResult:
    """Branch and bound on each disjunct in ``options.bab_share`` of the time left: a first pass gives each an
    equal part of half of it (the easy ones end early and pass their time on), a second pass shares the rest
    among those still open. Returns the sat or unknown result, or the disjuncts left open (for the MILP)."""
    stats["decided_by"] = "bab"
    forward = network.to_torch(torch.float64).eval()   # checks each round's candidates in a batch
    phase_end = time.perf_counter() + options.bab_share * deadline.left()
    for half in (0.5, 1.0):
        pass_end = time.perf_counter() + half * (phase_end - time.perf_counter())
        undecided = []
        for i, (c, d) in enumerate(disjuncts):
            now = time.perf_counter()
            end = now + (pass_end - now) / (len(disjuncts) - i)
            outcome = _bab_disjunct(network, forward, spec, bounds, c, d, options, check, deadline, stats, end)
            if outcome is None:
                continue
            if outcome.status != "timeout":
                return outcome
            undecided.append((c, d))
        disjuncts = undecided
        if not disjuncts:
            break
    if disjuncts and options.bab_share >= 1:
        raise _Expired
    return disjuncts


def _bab_disjunct(network: Network, forward: torch.nn.Module, spec: Specification, bounds: Bounds,
                  c: np.ndarray, d: np.ndarray, options: VerifierOptions, check: Checker, deadline: Deadline,
                  stats: dict, end: float) -> Optional[VerificationResult]:
    """Branch and bound (:mod:`.bab`) for one conjunction ``C y <= d`` until ``end``: ``None`` when proved,
    a sat or unknown result, or a ``timeout`` one when undecided (out of time or of memory). The MILP
    decides the leaves whose ReLUs are all stable (an LP). ``forward``: the network in float64 (torch)."""

    def find(xs: np.ndarray) -> Optional[int]:
        with torch.no_grad():
            ys = forward(torch.from_numpy(np.ascontiguousarray(xs))).numpy()
        meets = np.flatnonzero(((ys @ np.atleast_2d(c).T - d) <= 0).all(1))
        for i in meets[:8]:   # a float64 hit the original model does not confirm is a tie: a few suffice
            if _confirmed(spec, check, xs[i]) is not None:
                return int(i)
        return None

    def exact(leaf: Bounds) -> tuple[str, Optional[np.ndarray]]:
        outcome = _solve_disjunct(network, spec, leaf, c, d, options, check, deadline)
        if outcome is None:
            return "unsat", None
        return ("sat", outcome.counterexample) if outcome.status == "sat" else ("unknown", None)

    result = branch_and_bound(network, bounds, c, d, end=min(end, deadline.end), find=find, exact=exact,
                              options=options.bab)
    totals = stats.setdefault("bab", {})
    for key, value in result.stats.items():
        totals[key] = max(totals.get(key, value), value) if key in ("max_open", "root_bound") \
            else round(totals.get(key, 0) + value, 4)
    if result.status == "unsat":
        return None
    if result.status == "sat":
        x = result.counterexample
        return _sat(x, _confirmed(spec, check, x), "bab")
    if result.status in ("timeout", "memory"):
        return VerificationResult("timeout", 0.0, method="bab", message=f"branch and bound: {result.status}")
    return VerificationResult("unknown", 0.0, method="bab", message="an all-stable leaf's LP did not decide")


def _solve_disjunct(network: Network, spec: Specification, bounds: Bounds, c: np.ndarray, d: np.ndarray,
                    options: VerifierOptions, check: Checker, deadline: Deadline) -> Optional[VerificationResult]:
    """MILP for one conjunction ``C y <= d``: ``None`` if infeasible, else a sat or undecided result."""
    for margin in (0.0, 1e-5):
        model = NetworkModel(network, bounds, asymmetric=options.asymmetric, threads=options.threads)
        model.encode_until(len(network.layers))
        out = model.units[-1]
        (t,) = model.add_cols(np.array([-np.inf]), np.array([-margin * max(1.0, float(np.abs(d).max()))]))
        for row, rhs in zip(c, d):
            model.add_linear_row(out, row, -np.inf, float(rhs), [t], [-1.0])   # c.y - d <= t <= -margin
        model.set_integer(True)
        model.set_objective([t], [1.0], maximize=False)
        if deadline.expired():
            raise _Expired
        result = model.solve(time_limit=deadline.left(), first_solution=True)
        if result.status == "infeasible":
            return None if margin == 0.0 else VerificationResult(
                "unknown", 0.0, method="milp", message="the MILP's counterexample is not confirmed by the "
                "original network and no point with a margin exists (a numerical tie at the boundary)")
        if result.solution is None:
            if deadline.expired() or result.status == "time_limit":
                raise _Expired
            return VerificationResult("unknown", 0.0, method="milp", message=f"HiGHS ended with {result.status}")
        x = np.clip(model.values(result.solution, 0), spec.lower, spec.upper)
        y = _confirmed(spec, check, x)
        if y is not None:
            return _sat(x, y, "milp")
        polished = attack_box(network, spec, options, start=x)
        y = _confirmed(spec, check, polished)
        if y is not None:
            return _sat(polished, y, "milp")
    return VerificationResult("unknown", 0.0, method="milp",
                              message="the MILP's counterexamples are not confirmed by the original network")


__all__ = ["Checker", "Deadline", "SpecificationTask", "VerificationResult", "VerifierOptions", "attack_box",
           "compute_bounds", "verify"]
