"""Branch and bound on ReLU splits: every domain bound is sound, and the verdicts match the MILP's.

Soundness is checked directly: for domains cut out of sampled points' sign patterns and arbitrary
(``alpha``, ``beta``), no sampled point of the domain may score below the domain's bound. Completeness
is checked against the MILP (the verifier's other complete step) on small random networks, with sat
always confirmed on the network itself.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from test_verification import mlp as random_mlp
from torch import nn

from threedb.robustness.verification.bab import (BabOptions, _Deadline, _Domains, _Problem, branch_and_bound,
                                                 supports)
from threedb.robustness.verification.bounds import symbolic_bounds
from threedb.robustness.verification.milp import NetworkModel
from threedb.robustness.verification.network import from_torch
from threedb.robustness.verification.spec import Specification, local_robustness
from threedb.robustness.verification.verifier import VerifierOptions, verify

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed: int, sizes=(6, 16, 16, 4)) -> nn.Sequential:
    """test_verification's random MLP, a little wider by default."""
    return random_mlp(seed, sizes)


def relu_inputs(network, points: np.ndarray) -> list[np.ndarray]:
    """The values entering each ReLU layer, for a batch of points."""
    values, out = points, []
    for k, layer in enumerate(network.layers):
        if k in network.relu_layers():
            out.append(values)
        values = layer(values)
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("refine", [False, True])
def test_every_domain_bound_holds_on_the_domain_for_any_alpha_and_beta(seed: int, refine: bool) -> None:
    rng = np.random.default_rng(seed)
    network = from_torch(mlp(seed), (6,))
    x = rng.uniform(0.2, 0.8, 6)
    lower, upper = x - 0.2, x + 0.2
    bounds = symbolic_bounds(network, lower, upper)
    label = int(network(x).argmax())
    c = np.zeros((1, 4))
    c[0, label], c[0, (label + 1) % 4] = 1.0, -1.0
    problem = _Problem(network, bounds, c, np.array([0.1]))
    points = rng.uniform(lower, upper, size=(20000, 6))
    pre = relu_inputs(network, points)
    points_value = network(points) @ c[0] - 0.1
    # 24 domains, each fixing a random subset of the unstable units to the signs one sampled point has
    n_domains = 24
    owners = rng.integers(0, len(points), n_domains)
    split = []
    for r, k in enumerate(network.relu_layers()):
        lo, hi = bounds[k]
        unstable = (lo < 0) & (hi > 0)
        signs = np.where(pre[r][owners] >= 0, 1, -1) * unstable * (rng.uniform(size=(n_domains, lo.size)) < 0.5)
        split.append(torch.tensor(signs, dtype=torch.int8))
    alpha = [torch.tensor(rng.uniform(0, 1, (n_domains, 1, s.shape[1]))) for s in split]
    beta = [torch.tensor(rng.exponential(0.5, (n_domains, 1, s.shape[1]))) for s in split]
    lower_cut, upper_cut = problem.cut(split, [lo.expand(n_domains, -1) for lo in problem.root_lower],
                                       [hi.expand(n_domains, -1) for hi in problem.root_upper])
    domains = _Domains(split, [lo.clone() for lo in lower_cut], [hi.clone() for hi in upper_cut], alpha, beta,
                       torch.zeros(n_domains, dtype=torch.float64))
    if refine:
        problem.refine(domains, 0, chunk=7)
        assert sum(int((hi - lo).sum() < (h - l).sum()) for lo, hi, l, h in
                   zip(domains.lower, domains.upper, lower_cut, upper_cut)) > 0   # something got tighter
    value, x_star, _ = problem.lower_bound(domains, alpha, beta)
    checked = 0
    for i in range(n_domains):
        inside = np.ones(len(points), dtype=bool)
        for r in range(len(split)):
            s = split[r][i].numpy()
            inside &= ((s == 0) | (s * pre[r] >= 0)).all(1)
        assert inside[owners[i]]
        for r in range(len(split)):   # the domain's (refined) bounds hold on its points
            assert (pre[r][inside] >= domains.lower[r][i].numpy() - 1e-9).all()
            assert (pre[r][inside] <= domains.upper[r][i].numpy() + 1e-9).all()
        checked += int(inside.sum())
        assert (points_value[inside] >= float(value[i, 0]) - 1e-9).all(), f"domain {i}: a point beats its bound"
        assert ((x_star[i, 0].numpy() >= lower - 1e-12) & (x_star[i, 0].numpy() <= upper + 1e-12)).all()
    assert checked > n_domains


def lp_minimum(network, bounds, c: np.ndarray, d: np.ndarray) -> float:
    """The LP relaxation's minimum of ``c.y - d`` (triangle per unstable ReLU, the same bounds): no linear
    bound with any slopes can exceed it."""
    model = NetworkModel(network, bounds)
    model.encode_until(len(network.layers))
    model.set_integer(False)
    (t,) = model.add_cols(np.array([-np.inf]), np.array([np.inf]))
    model.add_linear_row(model.units[-1], c[0], -np.inf, float(d[0]), [t], [-1.0])   # c.y - d <= t
    model.set_objective([t], [1.0], maximize=False)
    return float(model.solve().objective)


@pytest.mark.parametrize("seed", range(3))
def test_optimised_slopes_close_most_of_the_gap_to_the_lp_and_never_pass_it(seed: int) -> None:
    """CROWN's slopes start at 0 or 1 (and beta at 0): the gradient must still reach them (a plain ``clamp``
    passes none on the boundary), and the optimised bound stays below the LP relaxation's minimum."""
    network = from_torch(mlp(seed, (6, 24, 24, 4)), (6,))
    x = np.full(6, 0.5)
    label = int(network(x).argmax())
    spec = local_robustness(x, label, 0.5, 4)
    bounds = symbolic_bounds(network, spec.lower, spec.upper)
    c, d = min(spec.disjuncts, key=lambda cd: float(cd[0][0] @ network(x)))   # the closest class
    problem = _Problem(network, bounds, c, d)
    zeros = [torch.zeros((1,) + lo.shape, dtype=torch.int8) for lo in problem.root_lower]
    alpha = [(hi >= -lo).to(torch.float64).reshape(1, 1, -1) for lo, hi in zip(problem.root_lower, problem.root_upper)]
    beta = [torch.zeros_like(a) for a in alpha]
    lower, upper = [lo.unsqueeze(0) for lo in problem.root_lower], [hi.unsqueeze(0) for hi in problem.root_upper]
    root = _Domains(zeros, lower, upper, alpha, beta, torch.full((1,), -torch.inf, dtype=torch.float64))
    start = float(problem.lower_bound(root, alpha, beta)[0][0, 0])
    lp = lp_minimum(network, bounds, c, d)
    assert start < lp < 0   # a loose CROWN bound on an open question: something to optimise
    better, _, _ = problem.optimise(root, 100, BabOptions(), _Deadline(time.perf_counter() + 30), use_beta=False)
    optimised = float(better.bound[0])
    assert optimised <= lp + 1e-9
    assert optimised > start + 0.5 * (lp - start), (start, optimised, lp)


def verdicts(network, spec, complete: str):
    result = verify(network, spec, VerifierOptions(timeout=60, attack=False, tighten="none", complete=complete))
    if result.status == "sat":
        assert spec.contains(result.counterexample) and spec.violated_by(network(result.counterexample))
    return result


def test_branch_and_bound_agrees_with_the_milp_and_confirms_every_sat() -> None:
    rng = np.random.default_rng(7)
    seen, methods = [], set()
    for seed in range(16):
        network = from_torch(mlp(seed + 100), (6,))
        x = rng.uniform(0, 1, 6)
        spec = local_robustness(x, int(network(x).argmax()), [0.05, 0.12, 0.25][seed % 3], 4)
        bab, milp = verdicts(network, spec, "bab"), verdicts(network, spec, "milp")
        assert bab.status == milp.status, f"seed {seed}: bab {bab.status}, milp {milp.status}"
        seen.append(bab.status)
        methods.add(bab.stats.get("decided_by"))
    assert {"sat", "unsat"} <= set(seen)
    assert "bab" in methods   # not every instance was decided by the bounds alone


def test_the_search_splits_down_to_exact_leaves_when_the_bounds_stay_loose() -> None:
    """No optimisation (zero steps, zero learning rates) and a threshold just below the sampled minimum of
    ``c.y``: only splits can decide, down to all-stable leaves that ``exact`` (an LP) settles; the verdicts
    still match the MILP's."""
    rng = np.random.default_rng(11)
    leaves, statuses = 0, []
    loose = BabOptions(batch=4, root_steps=0, steps=0, lr_alpha=0.0, lr_beta=0.0)
    for seed in range(6):
        network = from_torch(mlp(seed + 200, (4, 8, 8, 3)), (4,))
        x = rng.uniform(0.3, 0.7, 4)
        lower, upper = x - 0.3, x + 0.3
        c = np.array([[1.0, -1.0, 0.0]])
        lowest = float((network(rng.uniform(lower, upper, (50000, 4))) @ c[0]).min())
        for gap in (1e-3, -1e-3):   # just below (unsat if sampling found the minimum) and just above (sat)
            spec = Specification(lower, upper, [(c, np.array([lowest - gap]))])
            result = verify(network, spec, VerifierOptions(timeout=60, attack=False, tighten="none", bab=loose))
            reference = verify(network, spec, VerifierOptions(timeout=60, attack=False, complete="milp"))
            assert result.status == reference.status, f"seed {seed}, gap {gap}"
            if result.status == "sat":
                assert spec.violated_by(network(result.counterexample))
            statuses.append(result.status)
            leaves += result.stats.get("bab", {}).get("exact_leaves", 0)
    assert leaves > 0 and {"sat", "unsat"} <= set(statuses)


def test_networks_outside_relu_chains_use_the_milp() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    network = from_torch(module, (1, 4, 4))
    assert not supports(network)
    x = np.full(16, 0.5)
    spec = local_robustness(x, int(network(x).argmax()), 0.3, 3)
    result = verify(network, spec, VerifierOptions(timeout=30, attack=False, tighten="none"))
    assert result.status in ("sat", "unsat")
    if result.stats.get("disjuncts_left"):
        assert result.stats["decided_by"] == "milp"
    with pytest.raises(ValueError, match="chains of affine layers and ReLUs"):
        branch_and_bound(network, symbolic_bounds(network, spec.lower, spec.upper), *spec.disjuncts[0],
                         end=time.perf_counter() + 5, find=lambda xs: None, exact=lambda b: ("unknown", None))
