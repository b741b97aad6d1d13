"""Branch and bound on ReLU splits with optimised linear bounds (the alpha-/beta-CROWN idea).

A *domain* fixes the sign of some unstable ReLU inputs (``z_j >= 0`` or ``z_j <= 0``). Its lower bound
on a specification row ``c.y - d`` is one backward linear pass (as in :mod:`.bounds`) in which

* the intermediate bounds are the root's, each split unit's interval cut at zero (a domain is a subset
  of the root box, so the root's bounds hold on it);
* the lower line of every unstable ReLU has a free slope ``alpha`` in ``[0, 1]`` (any slope is sound);
* every split constraint ``s_j z_j >= 0`` (``s_j = +1`` active, ``-1`` inactive) enters the objective
  with a multiplier ``beta_j >= 0``: on the domain ``c.y - d >= c.y - d - sum_j beta_j s_j z_j``, so the
  pass's bound of the right side bounds the left, and the split now constrains the whole network.

``alpha`` and ``beta`` are optimised by projected gradient ascent (Adam) on the bound; every iterate is
a sound bound, and the best one per domain is kept. A domain whose bound is positive for some row of
its conjunction is proved; otherwise the free unit whose relaxation costs the bound most (the upper
line's intercept times its backward weight, the BaBSR score) is split in two, and the children start
from their parent's ``alpha`` and ``beta``. The input that minimises each linear bound is a candidate
counterexample, tested at every round. A domain with no unstable unit left is linear on the box and is
handed to ``exact`` (an LP). Domains are taken worst bound first, in batches.

Only chains of affine layers and ReLUs are handled (:func:`supports`); the verifier uses the MILP for
the rest. Everything is in ``float64`` and each bound is widened by the rounding its terms could make.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import numpy as np
import torch

from threedb.robustness.verification.bounds import ABS_MARGIN, REL_MARGIN, Bounds
from threedb.robustness.verification.network import Affine, Network, ReLU

BabStatus = Literal["unsat", "sat", "timeout", "unknown", "memory"]
#: ``exact(bounds) -> ("unsat", None) | ("sat", x) | ("unknown", None)`` for a domain with every unit stable
ExactSolver = Callable[[Bounds], tuple[str, Optional[np.ndarray]]]
#: ``find(xs) -> index of a confirmed counterexample among the rows of xs, or None``
CounterexampleFinder = Callable[[np.ndarray], Optional[int]]


@dataclass
class BabOptions:
    """Sizes and step counts of the search (the defaults follow beta-CROWN's, scaled to a CPU)."""

    batch: int = 256                 #: parent domains split per round (children: twice as many)
    root_steps: int = 40             #: alpha-optimisation steps at the root
    steps: int = 15                  #: alpha/beta steps per batch of children
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    #: recompute later layers' bounds on each new domain (off: on mnistfc it prunes a little more per domain
    #: but costs more than it saves: 256x2 prop_1_0.03 24.4 s vs 8.5 s, 256x4 prop_0_0.03 26.4 s vs 15.5 s)
    refine: bool = False
    memory_gb: float = 2.0           #: open domains' alpha/beta kept before giving up ("memory")


@dataclass
class BabResult:
    """How the search ended: ``unsat`` (every domain proved), ``sat`` (with ``counterexample``),
    ``timeout``, ``unknown`` (an exact leaf could not decide) or ``memory`` (too many open domains)."""

    status: BabStatus
    counterexample: Optional[np.ndarray] = None
    stats: dict = field(default_factory=dict)


def supports(network: Network) -> bool:
    """Whether the network is a chain of affine layers and ReLUs ending in an affine layer."""
    return bool(network.layers) and isinstance(network.layers[-1], Affine) and all(
        isinstance(layer, (Affine, ReLU)) for layer in network.layers)


class _Deadline:
    def __init__(self, end: float) -> None:
        self.end = end

    def expired(self) -> bool:
        return time.perf_counter() >= self.end


@dataclass
class _Domains:
    """A batch of domains: per ReLU layer the split signs (``int8``, ``D x n``), the input bounds on the
    domain (``D x n``), and ``alpha``, ``beta`` (``D x m x n``)."""

    split: list[torch.Tensor]
    lower: list[torch.Tensor]
    upper: list[torch.Tensor]
    alpha: list[torch.Tensor]
    beta: list[torch.Tensor]
    bound: torch.Tensor          #: best lower bound over the rows' max (``D``)

    def __len__(self) -> int:
        return int(self.bound.shape[0])

    def _fields(self) -> list[list[torch.Tensor]]:
        return [self.split, self.lower, self.upper, self.alpha, self.beta]

    def take(self, index: torch.Tensor) -> "_Domains":
        return _Domains(*[[t[index] for t in f] for f in self._fields()], self.bound[index])

    @staticmethod
    def cat(parts: list["_Domains"]) -> "_Domains":
        parts = [p for p in parts if len(p)]
        fields = [[torch.cat(ts) for ts in zip(*f)] for f in zip(*[p._fields() for p in parts])]
        return _Domains(*fields, torch.cat([p.bound for p in parts]))


def _project(value: torch.Tensor, low: float, high: Optional[float]) -> torch.Tensor:
    """``value`` clamped into ``[low, high]`` (what keeps the bound sound), with the gradient of the identity:
    ``clamp``'s is zero on the boundary, where CROWN's slopes (0 or 1) and the betas (0) start."""
    return value + (value.clamp(low, high) - value).detach()


def _margin(scale: torch.Tensor) -> torch.Tensor:
    """Outward rounding, as for every other bound (:func:`.bounds.backward_bound`), on the terms' sizes."""
    return ABS_MARGIN + REL_MARGIN * 64 * 4 * scale


class _Problem:
    """The network, the root bounds and one conjunction ``C y <= d`` as tensors for the backward passes."""

    def __init__(self, network: Network, bounds: Bounds, c: np.ndarray, d: np.ndarray) -> None:
        self.network = network
        self.root_bounds = bounds
        self.layers = network.layers
        self.weights = {k: (torch.from_numpy(layer.weight), torch.from_numpy(layer.bias))
                        for k, layer in enumerate(self.layers) if isinstance(layer, Affine)}
        self.relus = network.relu_layers()
        self.root_lower = [torch.from_numpy(bounds[k][0]) for k in self.relus]
        self.root_upper = [torch.from_numpy(bounds[k][1]) for k in self.relus]
        self.x_lower = torch.from_numpy(bounds[0][0])
        self.x_upper = torch.from_numpy(bounds[0][1])
        self.x_scale = torch.maximum(self.x_lower.abs(), self.x_upper.abs())
        self.c = torch.from_numpy(np.atleast_2d(np.asarray(c, dtype=np.float64)))
        self.d = torch.from_numpy(np.asarray(d, dtype=np.float64).reshape(-1))

    def backward(self, coef: torch.Tensor, const: torch.Tensor, upto: int, lower: list[torch.Tensor],
                 upper: list[torch.Tensor], alpha: Optional[list[torch.Tensor]] = None,
                 beta: Optional[list[torch.Tensor]] = None, split: Optional[list[torch.Tensor]] = None,
                 scores: Optional[list[torch.Tensor]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sound lower bounds (``D x m``) of ``coef @ v + const`` over each domain, ``v`` the values entering
        layer ``upto`` (``coef``: ``D x m x n``), and the box corners minimising the linear bounds.

        ReLU layer ``r`` below ``upto`` is relaxed on ``[lower[r], upper[r]]`` (``D x n``) with lower slope
        ``alpha[r]`` (default CROWN's adaptive one); with ``beta``, each split constraint ``split * z >= 0``
        is added with its multiplier. ``scores``, when given, receives per ReLU layer the BaBSR score."""
        scale = const.detach().abs()
        r = sum(k < upto for k in self.relus)   # the ReLU layers below upto
        for k in range(upto - 1, -1, -1):
            if k in self.weights:
                weight, bias = self.weights[k]
                const = const + coef @ bias
                scale = scale + coef.detach().abs() @ bias.abs()
                coef = coef @ weight
                continue
            r -= 1
            lo, hi = lower[r].unsqueeze(1), upper[r].unsqueeze(1)
            active, inactive = lo >= 0, hi <= 0
            unstable = ~(active | inactive)
            width = torch.where(unstable, hi - lo, torch.ones_like(hi))
            up_slope = torch.where(unstable, hi / width, active.to(hi.dtype))
            up_offset = torch.where(unstable, -lo * hi / width, torch.zeros_like(hi))
            slope = _project(alpha[r], 0.0, 1.0) if alpha is not None else (hi >= -lo).to(hi.dtype)
            low_slope = torch.where(unstable, slope, active.to(hi.dtype))
            positive, negative = coef.clamp(min=0.0), coef.clamp(max=0.0)
            intercept = negative * up_offset                       # <= 0: what the upper line costs
            if scores is not None:
                scores[r] = -intercept.detach().sum(1)
            const = const + intercept.sum(-1)
            scale = scale + intercept.detach().abs().sum(-1)
            coef = positive * low_slope + negative * up_slope
            if beta is not None:
                coef = coef - _project(beta[r], 0.0, None) * split[r].unsqueeze(1).to(coef.dtype)
        positive, negative = coef.clamp(min=0.0), coef.clamp(max=0.0)
        value = positive @ self.x_lower + negative @ self.x_upper + const
        scale = scale + coef.detach().abs() @ self.x_scale
        x_star = torch.where(coef.detach() > 0, self.x_lower, self.x_upper)
        return value - _margin(scale), x_star

    def lower_bound(self, domains: _Domains, alpha: list[torch.Tensor], beta: list[torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Per domain and row a sound lower bound of ``c_r.y - d_r`` (``D x m``), the inputs minimising the
        linear bounds (``D x m x n_in``), and per ReLU layer the BaBSR branching score (``D x n``)."""
        n_domains, m = len(domains), self.c.shape[0]
        scores: list[torch.Tensor] = [torch.empty(0)] * len(self.relus)
        value, x_star = self.backward(self.c.expand(n_domains, m, -1), -self.d.expand(n_domains, m),
                                      len(self.layers), domains.lower, domains.upper, alpha, beta,
                                      domains.split, scores)
        return value, x_star, scores

    def cut(self, split: list[torch.Tensor], lower: list[torch.Tensor], upper: list[torch.Tensor]
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Bounds cut at zero by the splits (an active unit's input is >= 0 on the domain, an inactive one's <= 0)."""
        return ([torch.where(s > 0, lo.clamp(min=0.0), lo) for s, lo in zip(split, lower)],
                [torch.where(s < 0, hi.clamp(max=0.0), hi) for s, hi in zip(split, upper)])

    def refine(self, domains: _Domains, first: int, chunk: int = 64) -> None:
        """Recompute the input bounds of ReLU layers after ``first`` on each domain (a backward pass through
        the domain's own relaxations below; CROWN slopes, no ``beta``), intersected with the ones it has.
        Splits below a layer make its relaxations exact, so its units' bounds shrink and many become stable."""
        with torch.no_grad():
            for r in range(first + 1, len(self.relus)):
                k = self.relus[r]
                rows = torch.nonzero((self.root_lower[r] < 0) & (self.root_upper[r] > 0)).flatten()
                if not rows.numel():
                    continue
                weight, bias = self.weights[k - 1]
                both = torch.cat([weight[rows], -weight[rows]])         # lower bounds of z and of -z
                offset = torch.cat([bias[rows], -bias[rows]])
                for start in range(0, len(domains), chunk):
                    part = slice(start, start + chunk)
                    n = len(domains.bound[part])
                    value, _ = self.backward(both.expand(n, -1, -1), offset.expand(n, -1), k - 1,
                                             [lo[part] for lo in domains.lower], [hi[part] for hi in domains.upper])
                    lo, hi = value[:, :rows.numel()], -value[:, rows.numel():]
                    domains.lower[r][part, rows] = torch.maximum(domains.lower[r][part, rows], lo)
                    domains.upper[r][part, rows] = torch.minimum(domains.upper[r][part, rows], hi)
                cut_lower, cut_upper = self.cut([domains.split[r]], [domains.lower[r]], [domains.upper[r]])
                domains.lower[r], domains.upper[r] = cut_lower[0], cut_upper[0]

    def optimise(self, domains: _Domains, steps: int, options: BabOptions, deadline: _Deadline,
                 use_beta: bool) -> tuple[_Domains, torch.Tensor, list[torch.Tensor]]:
        """``steps`` of Adam on ``alpha`` (and ``beta``); returns the domains with their best bounds and
        optimised multipliers, the last candidate inputs and the last branching scores."""
        alpha = [a.clone().requires_grad_(True) for a in domains.alpha]
        beta = [b.clone().requires_grad_(True) for b in domains.beta]
        groups = [{"params": alpha, "lr": options.lr_alpha}]
        if use_beta:
            groups.append({"params": beta, "lr": options.lr_beta})
        optimiser = torch.optim.Adam(groups)
        best = torch.full((len(domains), self.c.shape[0]), -torch.inf, dtype=torch.float64)
        best_alpha = [a.detach().clone() for a in alpha]
        best_beta = [b.detach().clone() for b in beta]
        x_star, scores = None, None
        for step in range(max(steps, 1)):
            value, x_star, scores = self.lower_bound(domains, alpha, beta)
            improved = value.detach() > best
            best = torch.where(improved, value.detach(), best)
            any_row = improved.any(1)
            for saved, current in zip(best_alpha + best_beta, alpha + beta):
                saved[any_row] = current.detach()[any_row]
            if step == steps - 1 or bool((best.amax(1) > 0).all()) or deadline.expired():
                break
            optimiser.zero_grad()
            (-value.sum()).backward()
            optimiser.step()
            with torch.no_grad():
                for a in alpha:
                    a.clamp_(0.0, 1.0)
                for b in beta:
                    b.clamp_(min=0.0)
        out = _Domains(domains.split, domains.lower, domains.upper, best_alpha, best_beta, best.amax(1))
        return out, x_star, scores


def _initial_alpha(lower: torch.Tensor, upper: torch.Tensor, m: int) -> torch.Tensor:
    """CROWN's adaptive lower slope (1 where ``u >= -l``), one copy per row."""
    return (upper >= -lower).to(torch.float64).expand(m, -1).clone()


def branch_and_bound(network: Network, bounds: Bounds, c: np.ndarray, d: np.ndarray, *, end: float,
                     find: CounterexampleFinder, exact: ExactSolver,
                     options: Optional[BabOptions] = None) -> BabResult:
    """Decide whether ``C y <= d`` (rows of ``c``, ``d``) has a solution in the box ``bounds[0]``.

    ``bounds``: sound bounds of every layer on the box (e.g. :func:`.bounds.symbolic_bounds`, tightened
    or not); ``end``: a ``time.perf_counter()`` deadline; ``find``: confirms candidate counterexamples
    on the original model; ``exact``: decides a domain whose ReLUs are all stable."""
    options = options or BabOptions()
    if not supports(network):
        raise ValueError(f"{network.source}: branch and bound handles chains of affine layers and ReLUs only")
    deadline = _Deadline(end)
    problem = _Problem(network, bounds, c, d)
    m = problem.c.shape[0]
    # per domain: alpha and beta (float64, one copy per row), its bounds (float64) and the int8 signs
    per_domain = sum(lo.numel() for lo in problem.root_lower) * (16 * m + 17)
    max_domains = max(int(options.memory_gb * 1024 ** 3 / max(per_domain, 1)), 2 * options.batch)
    stats = {"domains": 0, "rounds": 0, "exact_leaves": 0, "max_open": 0}
    begin = time.perf_counter()
    split = [torch.zeros((1,) + lo.shape, dtype=torch.int8) for lo in problem.root_lower]
    alpha = [_initial_alpha(lo, hi, m).unsqueeze(0) for lo, hi in zip(problem.root_lower, problem.root_upper)]
    beta = [torch.zeros_like(a) for a in alpha]
    lower = [lo.unsqueeze(0).clone() for lo in problem.root_lower]
    upper = [hi.unsqueeze(0).clone() for hi in problem.root_upper]
    root = _Domains(split, lower, upper, alpha, beta, torch.full((1,), -torch.inf, dtype=torch.float64))
    root, x_star, scores = problem.optimise(root, options.root_steps, options, deadline, use_beta=False)
    stats["root_bound"] = float(root.bound[0])
    open_domains, open_scores = root, [s for s in scores]

    def finish(status: BabStatus, x: Optional[np.ndarray] = None) -> BabResult:
        stats["seconds"] = round(time.perf_counter() - begin, 4)
        return BabResult(status, x, stats)

    def candidates(x: torch.Tensor) -> Optional[np.ndarray]:
        flat = x.reshape(-1, x.shape[-1]).numpy()
        hit = find(flat)
        return None if hit is None else flat[hit]

    found = candidates(x_star)
    if found is not None:
        return finish("sat", found)
    proved = open_domains.bound > 0
    open_domains = open_domains.take(~proved)
    open_scores = [s[~proved] for s in open_scores]
    while len(open_domains):
        if deadline.expired():
            return finish("timeout")
        stats["rounds"] += 1
        order = torch.argsort(open_domains.bound)
        pick, rest = order[:options.batch], order[options.batch:]
        parents = open_domains.take(pick)
        parent_scores = [s[pick] for s in open_scores]
        rest_domains = open_domains.take(rest)
        rest_scores = [s[rest] for s in open_scores]
        # the unit to split: the largest score among free unstable units, over all layers
        lower, upper = parents.lower, parents.upper
        flat_scores, offsets = [], [0]
        for s, lo, hi, sp in zip(parent_scores, lower, upper, parents.split):
            free = (sp == 0) & (lo < 0) & (hi > 0)
            # a tiny positive floor keeps every free unit eligible when the scores are all zero
            flat_scores.append(torch.where(free, s + 1e-12 * (hi - lo), torch.full_like(s, -1.0)))
            offsets.append(offsets[-1] + s.shape[1])
        joined = torch.cat(flat_scores, 1)
        best_score, best_unit = joined.max(1)
        leaves = best_score < 0
        if bool(leaves.any()):
            for i in torch.nonzero(leaves).flatten().tolist():
                stats["exact_leaves"] += 1
                status, x = exact(_leaf_bounds(problem, parents, i))
                if status == "sat":
                    return finish("sat", x)
                if status != "unsat":
                    return finish("unknown")
            keep = ~leaves
            parents, best_unit = parents.take(keep), best_unit[keep]
        n = len(parents)
        if n:
            children = _split(problem, parents, best_unit, offsets)
            if options.refine:
                layer = int(np.searchsorted(offsets, int(best_unit.min()), side="right")) - 1
                problem.refine(children, layer)
            children, x_star, scores = problem.optimise(children, options.steps, options, deadline, use_beta=True)
            stats["domains"] += len(children)
            found = candidates(x_star)
            if found is not None:
                return finish("sat", found)
            alive = children.bound <= 0
            children = children.take(alive)
            scores = [s[alive] for s in scores]
        else:
            children, scores = parents, parent_scores
        open_domains = _Domains.cat([rest_domains, children]) if len(rest_domains) else children
        open_scores = [torch.cat([a, b]) for a, b in zip(rest_scores, scores)] if len(rest_domains) else scores
        stats["max_open"] = max(stats["max_open"], len(open_domains))
        if len(open_domains) > max_domains:
            return finish("memory")
    return finish("unsat")


def _split(problem: _Problem, parents: _Domains, unit: torch.Tensor, offsets: list[int]) -> _Domains:
    """Two children per parent: the chosen unit (a flat index over all ReLU layers) active, then inactive."""
    n = len(parents)
    rows = torch.arange(n)
    split = [s.repeat(2, 1) for s in parents.split]
    for r in range(len(split)):
        inside = (unit >= offsets[r]) & (unit < offsets[r + 1])
        local = (unit - offsets[r])[inside]
        sel = rows[inside]
        split[r][sel, local] = 1
        split[r][sel + n, local] = -1
    lower, upper = problem.cut(split, [lo.repeat(2, 1) for lo in parents.lower],
                               [hi.repeat(2, 1) for hi in parents.upper])
    alpha = [a.repeat(2, 1, 1) for a in parents.alpha]
    beta = [b.repeat(2, 1, 1) for b in parents.beta]
    return _Domains(split, lower, upper, alpha, beta, parents.bound.repeat(2))


def _leaf_bounds(problem: _Problem, domains: _Domains, i: int) -> Bounds:
    """The root bounds with domain ``i``'s ReLU input bounds (every unit now of one sign)."""
    out = [(lo.copy(), hi.copy()) for lo, hi in problem.root_bounds]
    for r, k in enumerate(problem.relus):
        out[k] = (domains.lower[r][i].numpy().copy(), domains.upper[r][i].numpy().copy())
    return out


__all__ = ["BabOptions", "BabResult", "branch_and_bound", "supports"]
