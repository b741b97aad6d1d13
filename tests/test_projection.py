"""Dataset projection (threedb.robustness.projection): the unbiased mixture MMD^2 against a direct computation
and in simulation, the simplex solvers, recovery of known mixture weights, errors, determinism, resampling."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from threedb.robustness.projection import (SOLVERS, ProjectionError, RandomConvEncoder, active_set,
                                           bandwidth_from_scale, extract_features, median_bandwidth, mixture_mmd, mixture_mmd2_direct,
                                           mmd2_unbiased, penultimate_features, project_dataset, project_simplex,
                                           projected_gradient_descent, rbf_kernel, resample)

torch.set_num_threads(1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_groups(means: torch.Tensor, n: int, g: torch.Generator, scale: float = 1.0) -> list[torch.Tensor]:
    return [m + scale * torch.randn(n, means.shape[1], generator=g, dtype=torch.float64) for m in means]


def mixture_sample(means: torch.Tensor, counts: list[int], g: torch.Generator) -> torch.Tensor:
    """A target with exactly ``counts[i]`` points from the unit Gaussian around ``means[i]``."""
    return torch.cat([m + torch.randn(c, means.shape[1], generator=g, dtype=torch.float64)
                      for m, c in zip(means, counts) if c])


def loop_mmd2u(x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    """Gretton et al. (2012) eq. 3, pair by pair."""
    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma ** 2))
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def gaussian_kernel_mean(mu_a: torch.Tensor, var_a: float, mu_b: torch.Tensor, var_b: float, sigma: float) -> float:
    """``E k(x, y)`` for independent ``x ~ N(mu_a, var_a I)``, ``y ~ N(mu_b, var_b I)`` and the RBF kernel."""
    d = len(mu_a)
    s = sigma ** 2 + var_a + var_b
    return (sigma ** 2 / s) ** (d / 2) * math.exp(-float(((mu_a - mu_b) ** 2).sum()) / (2 * s))


# --- the estimator --------------------------------------------------------------------------------------------

def test_estimator_equals_direct_computation_and_its_gradient() -> None:
    g = gen(1)
    target = torch.randn(7, 3, generator=g, dtype=torch.float64)
    groups = [torch.randn(n, 3, generator=g, dtype=torch.float64) + i for i, n in enumerate((2, 5, 4))]
    objective = mixture_mmd(target, groups, 1.3)
    chunked = mixture_mmd(target, groups, 1.3, chunk_elements=3)       # row chunks of one sample
    for _ in range(5):
        w = torch.rand(3, generator=g, dtype=torch.float64)
        w /= w.sum()
        direct = mixture_mmd2_direct(target, groups, w, 1.3)
        assert objective.value(w) == pytest.approx(direct, abs=1e-12)
        assert chunked.value(w) == pytest.approx(direct, abs=1e-12)
        h = 1e-5
        numeric = torch.tensor([(mixture_mmd2_direct(target, groups, w + h * e, 1.3)
                                 - mixture_mmd2_direct(target, groups, w - h * e, 1.3)) / (2 * h)
                                for e in torch.eye(3, dtype=torch.float64)], dtype=torch.float64)
        assert torch.allclose(objective.gradient(w), numeric, atol=1e-8)
        assert torch.allclose(objective.central_gradient(w), objective.gradient(w), atol=1e-8)
    assert torch.allclose(objective.A, objective.A.T)


def test_one_group_is_gretton_unbiased_mmd2() -> None:
    g = gen(2)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    groups = [torch.randn(5, 2, generator=g, dtype=torch.float64) + 1.0, torch.randn(4, 2, generator=g,
                                                                                     dtype=torch.float64)]
    objective = mixture_mmd(x, groups, 0.8)
    for i, y in enumerate(groups):
        reference = loop_mmd2u(x, y, 0.8)
        assert objective.value(torch.eye(2, dtype=torch.float64)[i]) == pytest.approx(reference, abs=1e-12)
        assert mmd2_unbiased(x, y, 0.8) == pytest.approx(reference, abs=1e-12)


def test_unbiased_under_the_null_while_the_biased_statistic_is_not() -> None:
    g, sigma, w = gen(3), 1.0, torch.tensor([0.3, 0.7], dtype=torch.float64)
    unbiased, biased = [], []
    for _ in range(400):
        x = torch.randn(8, 2, generator=g, dtype=torch.float64)
        groups = [torch.randn(n, 2, generator=g, dtype=torch.float64) for n in (5, 7)]
        unbiased.append(mixture_mmd(x, groups, sigma).value(w))
        # the V-statistic with per-sample weights w_i / n_i (diagonals kept): positive in expectation
        pooled = torch.cat(groups)
        v = torch.cat([torch.full((5,), 0.3 / 5), torch.full((7,), 0.7 / 7)]).double()
        biased.append(float(rbf_kernel(x, x, sigma).mean() - 2 * (rbf_kernel(x, pooled, sigma).mean(0) @ v)
                            + v @ rbf_kernel(pooled, pooled, sigma) @ v))
    u, b = np.array(unbiased), np.array(biased)
    se_u, se_b = u.std(ddof=1) / math.sqrt(len(u)), b.std(ddof=1) / math.sqrt(len(b))
    assert abs(u.mean()) < 4 * se_u
    assert b.mean() > 10 * se_b


def test_unbiased_for_the_analytic_mmd2_of_gaussians() -> None:
    sigma, d = 1.5, 2
    mu_p, var_p = torch.zeros(d, dtype=torch.float64), 1.0
    mus = [torch.tensor([1.5, 0.0], dtype=torch.float64), torch.tensor([0.0, -1.0], dtype=torch.float64)]
    variances, w = [0.5, 2.0], torch.tensor([0.6, 0.4], dtype=torch.float64)
    true = gaussian_kernel_mean(mu_p, var_p, mu_p, var_p, sigma)
    for i in range(2):
        true -= 2 * w[i].item() * gaussian_kernel_mean(mu_p, var_p, mus[i], variances[i], sigma)
        for j in range(2):
            true += w[i].item() * w[j].item() * gaussian_kernel_mean(mus[i], variances[i], mus[j], variances[j], sigma)
    g, values = gen(4), []
    for _ in range(400):
        x = mu_p + math.sqrt(var_p) * torch.randn(10, d, generator=g, dtype=torch.float64)
        groups = [mus[i] + math.sqrt(variances[i]) * torch.randn(6, d, generator=g, dtype=torch.float64)
                  for i in range(2)]
        values.append(mixture_mmd(x, groups, sigma).value(w))
    v = np.array(values)
    assert true > 0.05                                           # the two distributions really differ
    assert abs(v.mean() - true) < 4 * v.std(ddof=1) / math.sqrt(len(v))


def test_kernel_bandwidths() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    assert float(rbf_kernel(x, x, 5.0)[0, 1]) == pytest.approx(math.exp(-0.5))
    assert bandwidth_from_scale(500) == pytest.approx(1 / math.sqrt(500))
    assert median_bandwidth(x) == pytest.approx(5.0)
    points = torch.arange(5, dtype=torch.float64)[:, None]         # distances 1,1,1,1,2,2,2,3,3,4: median 2
    assert median_bandwidth(points) == pytest.approx(2.0)


# --- solvers -------------------------------------------------------------------------------------------------

def test_project_simplex_properties() -> None:
    assert torch.allclose(project_simplex(torch.tensor([1.0, 1.0])), torch.tensor([0.5, 0.5]))
    assert torch.allclose(project_simplex(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 0.0]))
    assert torch.allclose(project_simplex(torch.tensor([0.2, 0.3, 0.5])), torch.tensor([0.2, 0.3, 0.5]))
    assert torch.allclose(project_simplex(torch.tensor([3.0, 1.0]), total=2.0), torch.tensor([2.0, 0.0]))
    g = gen(5)
    v = 3 * torch.randn(50, 6, generator=g, dtype=torch.float64)
    p = project_simplex(v)                                                      # batched, last dimension
    assert bool((p >= 0).all()) and torch.allclose(p.sum(-1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose(project_simplex(p), p)                                # idempotent
    assert torch.allclose(project_simplex(v + 7.0), p)                          # shift invariant
    z = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64)).sample((200,))
    for row in range(50):                                # optimality: <v - p, z - p> <= 0 for all z in the simplex
        assert float(((v[row] - p[row]) * (z - p[row])).sum(-1).max()) <= 1e-10
        assert float((v[row] - p[row]).norm()) <= float((v[row] - z).norm(dim=-1).min()) + 1e-12


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solvers_find_the_projection_of_a_point(name: str) -> None:
    """``min ||w - v||^2`` over the simplex is solved by ``project_simplex(v)``."""
    v = torch.tensor([0.9, 0.6, -0.2, 0.1, 0.05], dtype=torch.float64)
    result = SOLVERS[name](lambda w: float(((w - v) ** 2).sum()), lambda w: 2 * (w - v), 5, step_size=0.5)
    assert result.converged
    assert torch.allclose(result.weights, project_simplex(v), atol=1e-5)
    assert result.weights[2] == 0 and result.history[-1] <= result.history[0]


def test_solvers_agree_stay_on_the_simplex_and_reach_the_optimum() -> None:
    g = gen(6)
    means = 2.0 * torch.randn(12, 3, generator=g, dtype=torch.float64)
    groups = gaussian_groups(means, 15, g)
    target = mixture_sample(means, [40, 30, 20, 10] + [0] * 8, g)
    objective = mixture_mmd(target, groups, 1.5)
    step = 1.0 / objective.lipschitz()
    results = {name: SOLVERS[name](objective.value, objective.gradient, 12, step_size=step) for name in SOLVERS}
    central = active_set(objective.value, objective.central_gradient, 12, step_size=step)
    for result in (*results.values(), central):
        assert result.converged
        assert bool((result.weights >= 0).all()) and float(result.weights.sum()) == pytest.approx(1, abs=1e-9)
        assert all(b <= a + 1e-12 for a, b in zip(result.history, result.history[1:]))     # monotone descent
        assert result.iterations == len(result.history) - 1
    assert torch.allclose(results["active_set"].weights, results["pgd"].weights, atol=1e-3)
    assert torch.allclose(central.weights, results["active_set"].weights, atol=1e-6)
    cons = ({"type": "eq", "fun": lambda w: w.sum() - 1.0},)
    ref = minimize(lambda w: objective.value(torch.from_numpy(w)), np.full(12, 1 / 12), method="SLSQP",
                   jac=lambda w: objective.gradient(torch.from_numpy(w)).numpy(), bounds=[(0, 1)] * 12,
                   constraints=cons, options={"ftol": 1e-14, "maxiter": 500})
    for result in results.values():
        assert result.objective == pytest.approx(ref.fun, abs=1e-7)


def test_solver_options_are_checked() -> None:
    f, grad = (lambda w: float(w @ w)), (lambda w: 2 * w)
    with pytest.raises(ProjectionError, match="step_size"):
        projected_gradient_descent(f, grad, 3, step_size=0.0)
    with pytest.raises(ProjectionError, match="momentum"):
        active_set(f, grad, 3, momentum=1.0)
    with pytest.raises(ProjectionError, match="x0"):
        active_set(f, grad, 3, x0=torch.tensor([0.5, 0.6, 0.0]))


# --- project_dataset -----------------------------------------------------------------------------------------

MEANS = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]], dtype=torch.float64)


@pytest.mark.parametrize("solver", ["active_set", "pgd"])
def test_projection_recovers_known_mixture_weights(solver: str) -> None:
    g = gen(7)
    groups = gaussian_groups(MEANS, 300, g)
    source = torch.cat(groups)
    ids = torch.tensor([10, 20, 30, 40]).repeat_interleave(300)
    truth = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    target = mixture_sample(MEANS, [500, 300, 200, 0], g)          # the composition exactly: only sampling noise
    result = project_dataset(target, None, source, ids, per_class=False, bandwidth=1.0, solver=solver)
    proj = result[None]
    assert proj.group_ids.tolist() == [10, 20, 30, 40] and proj.group_sizes.tolist() == [300] * 4
    assert proj.solver.converged
    assert torch.allclose(proj.weights, truth, atol=0.04), proj.weights
    assert proj.mmd2 < 0.1 * proj.mmd2_uniform
    assert proj.mmd2_pooled == pytest.approx(proj.mmd2_uniform)           # equal group sizes
    assert proj.mmd2 == pytest.approx(mixture_mmd2_direct(target, groups, proj.weights, 1.0), abs=1e-12)


def test_per_class_projection_uses_each_class_sources() -> None:
    g = gen(8)
    # class 0 sources: groups 0, 1 (means 0, 1); class 1 sources: groups 2, 3, 4 (means 1, 2, 3) -- group 1 spans
    # both classes through the labels only where its samples carry them
    feats, gids, labels = [], [], []
    for label, group, mean in ((0, 0, 0), (0, 1, 1), (1, 2, 1), (1, 3, 2), (1, 4, 3)):
        feats.append(gaussian_groups(MEANS[mean:mean + 1], 80, g)[0])
        gids += [group] * 80
        labels += [label] * 80
    source, gids, labels = torch.cat(feats), torch.tensor(gids), torch.tensor(labels)
    target = torch.cat([mixture_sample(MEANS[[0, 1]], [90, 30], g), mixture_sample(MEANS[[2, 3]], [40, 40], g)])
    target_labels = torch.tensor([0] * 120 + [1] * 80)
    result = project_dataset(target, target_labels, source, gids, labels, bandwidth=1.0)
    assert result.labels == [0, 1] and result.per_class
    assert result[0].group_ids.tolist() == [0, 1] and result[1].group_ids.tolist() == [2, 3, 4]
    assert torch.allclose(result[0].weights, torch.tensor([0.75, 0.25], dtype=torch.float64), atol=0.05)
    assert torch.allclose(result[1].weights, torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64), atol=0.05)
    assert bool((labels[result[1].source_index] == 1).all()) and result[0].n_target == 120
    ids, matrix = result.weight_matrix()
    assert ids.tolist() == [0, 1, 2, 3, 4] and matrix.shape == (2, 5)
    assert torch.allclose(matrix.sum(1), torch.ones(2, dtype=torch.float64)) and matrix[0, 2:].abs().sum() == 0
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["classes"][1]["groups"] == [2, 3, 4] and summary["bandwidth"] == 1.0
    # without source labels each class is projected onto every group
    unlabelled = project_dataset(target, target_labels, source, gids, bandwidth=1.0, solver="pgd")
    assert unlabelled[1].group_ids.tolist() == [0, 1, 2, 3, 4]
    assert float(unlabelled[1].weights[[3, 4]].sum()) > 0.9


def test_errors() -> None:
    g = gen(9)
    target, source = torch.randn(10, 2, generator=g), torch.randn(12, 2, generator=g)
    tl, gids, sl = torch.tensor([0] * 5 + [3] * 3 + [7] * 2), torch.arange(12) % 3, torch.zeros(12, dtype=torch.long)
    with pytest.raises(ProjectionError, match=r"class\(es\) \[3, 7\]"):
        project_dataset(target, tl, source, gids, sl)
    with pytest.raises(ProjectionError, match=r"\[5\].*empty"):
        project_dataset(target, tl, source, gids, groups=[0, 5])
    with pytest.raises(ProjectionError, match="group 1 is empty"):
        mixture_mmd(target, [source, source[:0]], 1.0)
    with pytest.raises(ProjectionError, match=r"group\(s\) 9 \(1 sample\)"):
        project_dataset(target, tl, source, torch.tensor([0] * 11 + [9]))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ProjectionError, match="bandwidth"):
            project_dataset(target, tl, source, gids, bandwidth=bad)
    with pytest.raises(ProjectionError, match="bandwidth"):
        rbf_kernel(target, source, 0.0)
    with pytest.raises(ProjectionError, match="feature dimension 3"):
        project_dataset(target, tl, torch.randn(12, 3), gids)
    with pytest.raises(ProjectionError, match="target_labels must be a 1-D tensor of length 10"):
        project_dataset(target, tl[:9], source, gids)
    with pytest.raises(ProjectionError, match="source_groups must be a 1-D tensor of length 12"):
        project_dataset(target, tl, source, gids[:, None])
    with pytest.raises(ProjectionError, match="2-D"):
        project_dataset(target[0], None, source, gids, per_class=False)
    bad_target = target.clone()
    bad_target[4, 1] = float("nan")
    with pytest.raises(ProjectionError, match=r"target_features contains NaN.*\[4\]"):
        project_dataset(bad_target, tl, source, gids)
    bad_source = source.clone()
    bad_source[2, 0] = float("nan")
    with pytest.raises(ProjectionError, match="source_features contains NaN"):
        project_dataset(target, tl, bad_source, gids)
    with pytest.raises(ProjectionError, match="unknown solver"):
        project_dataset(target, tl, source, gids, solver="newton")
    with pytest.raises(ProjectionError, match="fewer than 2 samples"):
        project_dataset(target, torch.tensor([0] * 9 + [1]), source, gids)
    with pytest.raises(ProjectionError, match="momentum"):
        project_dataset(target, tl, source, gids, solver="pgd", solver_options={"momentum": 0.5})
    assert issubclass(ProjectionError, ValueError)


def test_determinism_per_seed() -> None:
    g = gen(10)
    source = torch.cat(gaussian_groups(MEANS, 60, g))
    ids = torch.arange(4).repeat_interleave(60)
    target = torch.cat([mixture_sample(MEANS, [30, 10, 0, 20], g), mixture_sample(MEANS, [0, 0, 30, 30], g)])
    labels = torch.tensor([0] * 60 + [1] * 60)
    first = project_dataset(target, labels, source, ids)              # median-heuristic bandwidth
    second = project_dataset(target, labels, source, ids)
    assert first.bandwidth == second.bandwidth
    assert all(torch.equal(a.weights, b.weights) for a, b in zip(first.projections, second.projections))
    draw = resample(first, 50, 3)
    assert torch.equal(draw.indices, resample(first, 50, 3).indices)
    assert not torch.equal(draw.indices, resample(first, 50, 4).indices)
    torch.manual_seed(123)
    enc_a = RandomConvEncoder(seed=5)
    torch.manual_seed(456)
    enc_b, enc_c = RandomConvEncoder(seed=5), RandomConvEncoder(seed=6)
    images = torch.rand(3, 3, 16, 16, generator=g)
    fa, fb, fc = (extract_features(e, images) for e in (enc_a, enc_b, enc_c))
    assert fa.shape == (3, 64) and torch.equal(fa, fb) and not torch.allclose(fa, fc)


def test_resample_proportions() -> None:
    g = gen(11)
    source = torch.cat(gaussian_groups(MEANS, 50, g))
    ids = torch.tensor([5, 6, 7, 8]).repeat_interleave(50)
    target = torch.cat([mixture_sample(MEANS, [60, 30, 10, 0], g), mixture_sample(MEANS, [0, 0, 10, 10], g)])
    labels = torch.tensor([1] * 100 + [2] * 20)
    result = project_dataset(target, labels, source, ids, bandwidth=1.0)
    draw = resample(result, 24000, gen(0))
    assert draw.labels is not None and len(draw.indices) == 24000
    assert int((draw.labels == 1).sum()) == 20000 and int((draw.labels == 2).sum()) == 4000   # 100 : 20
    for label in (1, 2):
        proj, mine = result[label], draw.labels == label
        shares = torch.tensor([float((draw.groups[mine] == gid).double().mean()) for gid in proj.group_ids])
        assert torch.allclose(shares, proj.weights.float(), atol=0.015)
        assert torch.equal(ids[draw.indices[mine]], draw.groups[mine])
    exact = resample(result, {1: 7, 2: 0}, 1, replacement=False)
    assert len(exact.indices) == 7 and len(set(exact.indices.tolist())) == 7
    with pytest.raises(ProjectionError, match="replacement"):
        resample(result, {1: 500}, 1, replacement=False)
    with pytest.raises(ProjectionError, match=r"\[9\]"):
        resample(result, {9: 3})


# --- features ------------------------------------------------------------------------------------------------

def test_penultimate_features_by_hook() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
    model.train()
    images = torch.rand(5, 3, 8, 8, generator=gen(12))
    feats = penultimate_features(model, images, "3", batch_size=2)
    with torch.no_grad():
        expected = model[:4](images)
    assert model.training and torch.allclose(feats, expected, atol=1e-6)
    with pytest.raises(ProjectionError, match="no submodule named 'head'"):
        penultimate_features(model, images, "head")
    with pytest.raises(ProjectionError, match=r"\[0, 1\]"):
        extract_features(RandomConvEncoder(), images * 2)
    with pytest.raises(ProjectionError, match="channels"):
        extract_features(RandomConvEncoder(), images[:, :1])
