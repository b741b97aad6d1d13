"""Robustness-function framework (threedb.robustness.framework): estimators against closed forms on a linear
classifier, the margin-curve evaluation against exact distances, the WAE, and bad input."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threedb.robustness.framework import (WAE, FrameworkError, OnManifold, UniformBall, basic_robustness,
                                          manifold_samples, margin_evaluation, r2_function, r4_function,
                                          robustness_score, train_wae)


class HalfSpace(nn.Module):
    """Two logits ``[0, w.x + b]``: class 1 on the half-space ``w.x + b > 0``."""

    def __init__(self, w: list[float], b: float) -> None:
        super().__init__()
        self.lin = nn.Linear(len(w), 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([w]))
            self.lin.bias.fill_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lin(x.flatten(1))
        return torch.cat([torch.zeros_like(s), s], 1)


def model() -> HalfSpace:
    return HalfSpace([1.0, 0.0], -0.5)          # boundary x_0 = 0.5, L2 and L-inf distance |x_0 - 0.5|


def points() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, 2, generator=g) * 0.8 + 0.1
    return x[(x[:, 0] - 0.5).abs() > 0.02]


def test_uniform_linf_estimate_matches_closed_form_and_interval_covers() -> None:
    # x_0 = 0.4, eps = 0.2: the L-inf box is [0.2, 0.6] in x_0, the prediction stays on [0.2, 0.5]: 3/4
    x = torch.tensor([[0.4, 0.5]])
    est = basic_robustness(model(), x, [0.2], UniformBall("linf", 4000), seed=1)
    assert abs(float(est.r[0, 0]) - 0.75) < 0.03
    low, high = est.interval(0.01)
    assert low[0, 0] <= 0.75 <= high[0, 0]
    # the Clopper-Pearson interval covers the truth in (about) 95% of independent seeds
    covered = 0
    for seed in range(40):
        e = basic_robustness(model(), x, [0.2], UniformBall("linf", 200), seed=seed)
        lo, hi = e.interval(0.05)
        covered += int(lo[0, 0] <= 0.75 <= hi[0, 0])
    assert covered >= 34


def test_uniform_l2_estimate_matches_high_sample_reference() -> None:
    # L2 disc of radius 0.2 centred 0.1 from the line: kept mass = 1 - segment area / disc area
    x, eps, d = torch.tensor([[0.4, 0.5]]), 0.2, 0.1
    segment = eps ** 2 * math.acos(d / eps) - d * math.sqrt(eps ** 2 - d ** 2)
    truth = 1 - segment / (math.pi * eps ** 2)
    est = basic_robustness(model(), x, [eps], UniformBall("l2", 5000), seed=0)
    lo, hi = est.interval(0.001)
    assert lo[0, 0] <= truth <= hi[0, 0]
    assert abs(float(est.r[0, 0]) - truth) < 0.03


def test_sampled_r2_is_an_upper_bound_close_to_the_analytic_margin_area() -> None:
    x, grid = points(), torch.linspace(0.0, 0.3, 31)
    margin = (x[:, 0] - 0.5).abs().double()
    analytic = float(margin.clamp(0, 0.3).mean())
    score = robustness_score(r2_function("linf", samples=300), model(), x, grid, seed=0)
    assert score.value >= analytic - 0.3 / 30       # the grid's resolution; sampling can only miss a flip
    assert score.value <= analytic + 0.03
    low, high = score.interval
    assert low <= score.value <= high
    assert score.sizes["inputs"] == x.shape[0] and score.sizes["samples_min"] == 300


def test_scores_are_deterministic_per_seed() -> None:
    x, grid = points(), torch.linspace(0.0, 0.3, 7)
    a = robustness_score(r2_function("l2", samples=50), model(), x, grid, seed=5)
    b = robustness_score(r2_function("l2", samples=50), model(), x, grid, seed=5)
    assert torch.equal(a.per_input, b.per_input)


def test_margin_evaluation_is_sound_and_tight_on_a_linear_model() -> None:
    x, grid = points(), torch.linspace(0.0, 0.6, 13)
    exact = (x[:, 0] - 0.5).abs().double()
    for norm in ("l2", "linf"):
        res = margin_evaluation(model(), x, norm=norm, eps=grid, seed=0)
        assert torch.isfinite(res.margin).all()
        # sound side: each margin is the distance of a point that changes the prediction, so >= exact
        assert (res.margin >= exact - 1e-6).all()
        assert (res.margin - exact).abs().max() < 1e-3
        pred = model()(res.point).argmax(1)
        assert (pred != res.prediction).all()
        assert abs(res.area - float(exact.clamp(0, 0.6).mean())) < 1e-3
        assert abs(sum(res.share.values()) - 1.0) < 1e-9


def test_wae_loss_falls_and_sampling_is_deterministic() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.2] * 8, [0.8] * 8])
    data = (centres[torch.randint(0, 2, (128,), generator=g)] + 0.05 * torch.randn(128, 8, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    wae = WAE((8,), latent=2, hidden=32)
    losses = train_wae(wae, data, steps=150, batch_size=32, lr=3e-3, seed=0)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    s1 = manifold_samples(wae.encode, wae.decode, data[:4], samples=10, generator=torch.Generator().manual_seed(1))
    s2 = manifold_samples(wae.encode, wae.decode, data[:4], samples=10, generator=torch.Generator().manual_seed(1))
    assert s1.shape == (4, 10, 8) and torch.equal(s1, s2)
    # R4 through the frozen WAE: a probability-weighted score in [0, 1] once normalised
    clf = HalfSpace([1.0] + [0.0] * 7, -0.5)
    score = robustness_score(r4_function(wae.encode, wae.decode, samples=50), clf, data[:16],
                             torch.linspace(0.1, 1.0, 10))
    assert 0.0 <= score.normalized <= 1.0


@pytest.mark.parametrize("call, words", [
    (lambda: basic_robustness(model(), points(), [-0.1], UniformBall("l2", 10)), "eps must be >= 0"),
    (lambda: basic_robustness(model(), torch.rand(3), [0.1], UniformBall("l2", 10)), "float batch"),
    (lambda: UniformBall("l1", 10), "unknown norm"),
    (lambda: UniformBall("l2", 0), "positive integer"),
    (lambda: robustness_score(r4_function(lambda x: x, lambda z: z), model(), points(), [0.0, 0.1]), "> 0"),
    (lambda: OnManifold(lambda x: x, lambda z: z, sigma=0.0), "sigma"),
    (lambda: margin_evaluation(model(), points(), norm="l3", eps=[0.1]), "unknown norm"),
])
def test_bad_input_gives_one_clear_error(call, words: str) -> None:
    with pytest.raises(FrameworkError, match=words):
        call()


# ---- losses -----------------------------------------------------------------------------------------------

def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (200,), generator=g)
    x = (0.35 + 0.3 * y[:, None].float() + 0.12 * torch.randn(200, 4, generator=g)).clamp(0, 1)
    return x, y


def _train_r4(wae: WAE, x: torch.Tensor, y: torch.Tensor, lam: float, seed: int) -> nn.Module:
    from threedb.robustness.framework.losses import r4_loss

    torch.manual_seed(seed)
    clf = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(clf.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(60):
        loss = r4_loss(clf, wae.encode, wae.decode, x, y, lam, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf


def test_loss2_is_deterministic_and_raises_r4_over_no_regularisation() -> None:
    x, y = _toy()
    torch.manual_seed(0)
    wae = WAE((4,), latent=2, hidden=32)
    train_wae(wae, x, steps=200, batch_size=64, lr=3e-3)
    grid = torch.linspace(0.05, 1.0, 20)
    a, b = _train_r4(wae, x, y, 1.0, 0), _train_r4(wae, x, y, 1.0, 0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    for seed in range(3):
        scores = {}
        for lam in (0.0, 1.0):
            clf = _train_r4(wae, x, y, lam, seed)
            assert float((clf(x).argmax(1) == y).float().mean()) > 0.9
            scores[lam] = robustness_score(r4_function(wae.encode, wae.decode, samples=50), clf, x, grid,
                                           seed=1).normalized
        assert scores[1.0] > scores[0.0]


def test_loss1_cotraining_runs_is_deterministic_and_the_generator_finds_closer_points() -> None:
    from threedb.robustness.framework.losses import generator_loss, r2_loss

    x, y = _toy()

    def run(seed: int) -> tuple[nn.Module, list[float]]:
        torch.manual_seed(seed)
        clf = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        gen = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4), nn.Sigmoid())
        opt_c = torch.optim.SGD(clf.parameters(), lr=0.3)
        opt_g = torch.optim.Adam(gen.parameters(), lr=1e-2)
        g_losses = []
        for _ in range(40):
            lg = generator_loss(clf, gen, x)
            opt_g.zero_grad()
            lg.backward()
            opt_g.step()
            g_losses.append(float(lg.detach()))
            lc = r2_loss(clf, gen, x, y, 0.1)
            opt_c.zero_grad()
            lc.backward()
            opt_c.step()
        return clf, g_losses

    (a, la), (b, lb) = run(0), run(0)
    assert la == lb and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert all(math.isfinite(v) for v in la)
    assert sum(la[-5:]) < sum(la[:5])
    with pytest.raises(FrameworkError, match="lam"):
        r2_loss(a, nn.Identity(), x, y, -1.0)


def test_score_interval_does_not_collapse_when_every_input_is_robust() -> None:
    # a classifier that never changes its mind: every per-input integral is the same, yet N = 39 inputs
    # cannot certify the mean exactly, so the interval must keep a positive width
    const = HalfSpace([0.0, 0.0], 1.0)
    score = robustness_score(r2_function("linf", samples=20), const, points(), torch.linspace(0, 0.3, 4))
    low, high = score.interval
    assert abs(score.value - 0.3) < 1e-6
    assert low < score.value <= high and high - low > 1e-3


def test_deepfool_lands_just_past_the_linear_boundary() -> None:
    from threedb.robustness.attacks.deepfool import DeepFool

    x = points().view(-1, 1, 1, 2)
    clf = model()
    pred = clf(x).argmax(1)
    exact = (x.flatten(1)[:, 0] - 0.5).abs()
    for norm in ("l2", "linf"):
        res = DeepFool(norm=norm, overshoot=0.02)(clf, x, pred)
        dist = (res.adv - x).flatten(1).norm(dim=1) if norm == "l2" else (res.adv - x).flatten(1).abs().amax(1)
        assert bool(res.success.all()) and (clf(res.adv).argmax(1) != pred).all()
        assert (dist >= exact - 1e-6).all() and (dist <= exact * 1.03 + 1e-3).all()
