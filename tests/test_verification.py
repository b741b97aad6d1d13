"""The verifier's bounds, MILP encoding and answers against ground truth on small networks.

Ground truth: dense sampling of the box (every sampled value must lie inside every bound; a sampled
violation means the verifier must say sat) and, on 2-input networks, a fine grid (the MILP's
maximum is exact: never below the grid's, and not above it by more than the grid's resolution allows).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from threedb.robustness.models import Normalized
from threedb.robustness.verification.bounds import interval_bounds, output_lower_bounds, symbolic_bounds
from threedb.robustness.verification.distortion import minimum_distortion
from threedb.robustness.verification.milp import NetworkModel
from threedb.robustness.verification.network import NetworkError, from_torch
from threedb.robustness.verification.spec import Specification, SpecificationError, local_robustness
from threedb.robustness.verification.verifier import Deadline, VerifierOptions, compute_bounds, verify

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed: int, sizes=(6, 12, 10, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4, 3))


def forward_all(network, points: np.ndarray) -> list[np.ndarray]:
    values = [points]
    for layer in network.layers:
        values.append(layer(values[-1]))
    return values


def assert_contains(bounds, values, what: str) -> None:
    for k, (value, (lo, hi)) in enumerate(zip(values, bounds)):
        assert (value >= lo - 1e-9).all() and (value <= hi + 1e-9).all(), f"{what}: layer {k} escapes its bounds"


@pytest.mark.parametrize("seed", range(6))
def test_every_bound_contains_every_sampled_value(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for module, shape in ((mlp(seed), (6,)), (cnn(seed), (1, 6, 6))):
        network = from_torch(module, shape)
        x = rng.uniform(0, 1, network.in_size)
        lower, upper = np.clip(x - 0.2, 0, 1), np.clip(x + 0.2, 0, 1)
        points = rng.uniform(lower, upper, size=(5000, network.in_size))
        points[:8] = np.where(rng.integers(0, 2, (8, network.in_size)), lower, upper)   # corners too
        values = forward_all(network, points)
        intervals = interval_bounds(network, lower, upper)
        symbolic = symbolic_bounds(network, lower, upper)
        assert_contains(intervals, values, "intervals")
        assert_contains(symbolic, values, "symbolic")
        for (li, ui), (ls, us) in zip(intervals, symbolic):
            assert (ls >= li).all() and (us <= ui).all(), "symbolic bounds looser than intervals"
        for tighten in ("lp", "milp"):
            stats: dict = {}
            tight = compute_bounds(network, lower, upper, VerifierOptions(tighten=tighten, milp_unit_time=0.2),
                                   Deadline(60), stats)
            assert_contains(tight, values, tighten)
        assert sum(stats["unstable"]) <= sum(stats["unstable_interval"])


def test_symbolic_bounds_are_much_tighter_than_intervals_on_a_deep_network() -> None:
    network = from_torch(mlp(3, (8, 20, 20, 20, 3)), (8,))
    x = np.full(8, 0.5)
    intervals = interval_bounds(network, x - 0.05, x + 0.05)
    symbolic = symbolic_bounds(network, x - 0.05, x + 0.05)
    width = lambda b: float((b[-1][1] - b[-1][0]).sum())  # noqa: E731
    assert width(symbolic) < 0.8 * width(intervals)


def exact_maximum(network, lower, upper, c: np.ndarray) -> float:
    """max c.y over the box by the MILP (asymmetric bounds, exact encoding)."""
    bounds = symbolic_bounds(network, lower, upper)
    model = NetworkModel(network, bounds)
    model.encode_until(len(network.layers))
    (t,) = model.add_cols(np.array([-np.inf]), np.array([np.inf]))
    model.add_linear_row(model.units[-1], c, 0.0, 0.0, [t], [-1.0])
    model.set_integer(True)
    model.set_objective([t], [1.0], maximize=True)
    result = model.solve(time_limit=30)
    assert result.status == "optimal"
    return result.objective


@pytest.mark.parametrize("seed", range(4))
def test_the_milp_maximum_is_exact_on_a_fine_grid(seed: int) -> None:
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    network = from_torch(module, (2,))
    lower, upper = np.array([0.2, 0.3]), np.array([0.7, 0.9])
    c = np.array([1.0, -1.0])
    g = np.linspace(0, 1, 401)
    grid = np.stack(np.meshgrid(lower[0] + g * 0.5, lower[1] + g * 0.6), -1).reshape(-1, 2)
    grid_max = float((network(grid) @ c).max())
    milp_max = exact_maximum(network, lower, upper, c)
    lipschitz = float(np.abs(torch.autograd.functional.jacobian(lambda v: module(v) @ torch.tensor(c).float(),
                                                                 torch.rand(200, 2)).detach()).sum(-1).max())
    assert milp_max >= grid_max - 1e-6
    assert milp_max <= grid_max + 2 * lipschitz * (0.6 / 400) + 1e-6


def test_the_maxpool_encoding_is_exact() -> None:
    torch.manual_seed(5)
    module = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Unflatten(1, (2, 2, 2)), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(2, 2))
    network = from_torch(module, (2,))
    assert [type(layer).__name__ for layer in network.layers] == ["Affine", "ReLU", "MaxPool", "Affine"]
    lower, upper = np.zeros(2), np.ones(2)
    g = np.linspace(0, 1, 301)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    with torch.no_grad():
        reference = module(torch.tensor(grid, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(network(grid), reference, rtol=1e-5, atol=1e-5)
    for c in (np.array([1.0, -1.0]), np.array([-1.0, 1.0])):
        milp_max = exact_maximum(network, lower, upper, c)
        assert grid_max_close(milp_max, float((network(grid) @ c).max()))


def grid_max_close(milp_max: float, grid_max: float) -> bool:
    return grid_max - 1e-6 <= milp_max <= grid_max + 0.05


def sampled_violation(network, spec: Specification, rng, n: int = 20000) -> bool:
    points = rng.uniform(spec.lower, spec.upper, size=(n, spec.n_inputs))
    outputs = network(points)
    return any(spec.violated_by(y) for y in outputs[np.argsort(outputs.max(1))][-2000:]) or any(
        spec.violated_by(y) for y in outputs[:2000])


@pytest.mark.parametrize("attack", [True, False])
def test_verdicts_agree_with_sampling_and_sat_is_always_confirmed(attack: bool) -> None:
    rng = np.random.default_rng(1)
    verdicts = []
    for seed in range(25):
        network = from_torch(mlp(seed), (6,))
        x = rng.uniform(0, 1, 6)
        label = int(network(x).argmax())
        spec = local_robustness(x, label, 0.15, 4)
        result = verify(network, spec, VerifierOptions(timeout=30, attack=attack))
        verdicts.append(result.status)
        if sampled_violation(network, spec, rng):
            assert result.status == "sat", f"seed {seed}: sampling finds a counterexample, verifier says {result.status}"
        if result.status == "sat":
            assert spec.contains(result.counterexample)
            assert spec.violated_by(network(result.counterexample))
    assert {"sat", "unsat"} <= set(verdicts)
    assert "unknown" not in verdicts and "timeout" not in verdicts


def test_every_ablation_setting_gives_the_same_verdicts() -> None:
    rng = np.random.default_rng(2)
    settings = [dict(), dict(restricted_domain=False), dict(asymmetric=False), dict(progressive=False),
                dict(symbolic=False), dict(tighten="none"), dict(tighten="milp")]
    for seed in range(6):
        network = from_torch(mlp(seed + 40), (6,))
        x = rng.uniform(0, 1, 6)
        spec = local_robustness(x, int(network(x).argmax()), 0.12, 4)
        answers = {verify(network, spec, VerifierOptions(timeout=30, attack=False, **s)).status for s in settings}
        assert len(answers) == 1 and answers <= {"sat", "unsat"}, f"seed {seed}: {answers}"


def test_a_counterexample_the_original_model_rejects_is_never_sat() -> None:
    network = from_torch(mlp(7), (6,))
    x = np.full(6, 0.5)
    label = int(network(x).argmax())
    spec = local_robustness(x, label, 1.0, 4)    # the whole box: surely some other class wins somewhere

    def honest_label_always_wins(point: np.ndarray) -> np.ndarray:
        y = np.zeros(4)
        y[label] = 1.0
        return y

    assert verify(network, spec, VerifierOptions(timeout=30)).status == "sat"
    result = verify(network, spec, VerifierOptions(timeout=30), check=honest_label_always_wins)
    assert result.status == "unknown" and result.counterexample is None


def test_a_tiny_budget_times_out() -> None:
    network = from_torch(mlp(8, (6, 40, 40, 40, 4)), (6,))
    x = np.full(6, 0.5)
    spec = local_robustness(x, int(network(x).argmax()), 0.4, 4)
    assert verify(network, spec, VerifierOptions(timeout=1e-4, attack=False)).status == "timeout"


def test_general_disjunctions_and_several_boxes() -> None:
    network = from_torch(mlp(9, (2, 8, 2)), (2,))
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201)), -1).reshape(-1, 2)
    y = network(grid)
    # "y0 >= top and y1 <= bottom": sat iff some grid point (or a point near it) meets both
    top, bottom = float(np.quantile(y[:, 0], 0.95)), float(np.quantile(y[:, 1], 0.5))
    c = np.array([[-1.0, 0.0], [0.0, 1.0]])
    d = np.array([-top, bottom])
    spec = Specification(np.zeros(2), np.ones(2), [(c, d)])
    truth = bool(np.any((y[:, 0] >= top) & (y[:, 1] <= bottom)))
    result = verify(network, spec, VerifierOptions(timeout=30, attack=False))
    assert result.status == ("sat" if truth else "unsat") or (not truth and result.status == "sat")
    impossible = Specification(np.zeros(2), np.ones(2), [(np.array([[-1.0, 0.0]]), np.array([-(y[:, 0].max() + 5)]))])
    assert verify(network, [impossible, impossible], VerifierOptions(timeout=30)).status == "unsat"
    assert verify(network, [impossible, spec], VerifierOptions(timeout=30)).status == result.status


def bisected_distortion(network, x, label, hi: float, steps: int = 14) -> tuple[float, float]:
    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        status = verify(network, local_robustness(x, label, mid, network.out_size),
                        VerifierOptions(timeout=30)).status
        assert status in ("sat", "unsat")
        lo, hi = (lo, mid) if status == "sat" else (mid, hi)
    return lo, hi


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_minimum_distortion_matches_bisection_and_is_optimal(norm: str) -> None:
    network = from_torch(mlp(11), (6,))
    x = np.full(6, 0.5)
    label = int(network(x).argmax())
    result = minimum_distortion(network, x, label, norm=norm, max_eps=0.5, options=VerifierOptions(timeout=60))
    assert result.status == "optimal", result.summary()
    assert result.gap <= 1e-5
    assert result.predicted != label or abs(result.margin) < 1e-6   # on the decision boundary
    if norm == "linf":
        lo, hi = bisected_distortion(network, x, label, 0.5)
        assert lo - 1e-4 <= result.distortion <= hi + 1e-4
    else:
        linf = minimum_distortion(network, x, label, norm="linf", max_eps=0.5).distortion
        assert linf - 1e-6 <= result.distortion <= 6 * linf + 1e-6


def test_minimum_distortion_targets_robust_and_misclassified() -> None:
    network = from_torch(mlp(12), (6,))
    x = np.full(6, 0.5)
    y = network(x)
    label = int(y.argmax())
    others = [j for j in range(4) if j != label]
    untargeted = minimum_distortion(network, x, label, max_eps=0.5)
    targeted = [minimum_distortion(network, x, label, max_eps=0.5, targets=[j]) for j in others]
    found = [t.distortion for t in targeted if t.distortion is not None]
    assert untargeted.distortion == pytest.approx(min(found), abs=1e-5)
    assert minimum_distortion(network, x, label, max_eps=1e-4).status == "robust"
    wrong = minimum_distortion(network, x, (label + 1) % 4)
    assert wrong.status == "misclassified" and wrong.distortion == 0.0


def test_unsupported_modules_and_bad_specifications_are_refused_clearly() -> None:
    with pytest.raises(NetworkError, match="Sigmoid at position 1"):
        from_torch(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()), (2,))
    with pytest.raises(SpecificationError, match="X_1 has lower bound 0.6 > upper bound 0.4"):
        Specification(np.array([0.0, 0.6]), np.array([1.0, 0.4]), [(np.ones((1, 2)), np.zeros(1))])
    network = from_torch(mlp(1), (6,))
    with pytest.raises(SpecificationError, match="declares 5 inputs but"):
        verify(network, local_robustness(np.zeros(5), 0, 0.1, 4))


def test_normalization_inside_the_model_becomes_part_of_the_network() -> None:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4, 3))
    body[1].running_mean.uniform_(-1, 1)
    body[1].running_var.uniform_(0.5, 2)
    model = Normalized(body, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]).eval()
    network = from_torch(model, (3, 4, 4))
    x = torch.rand(5, 3, 4, 4)
    with torch.no_grad():
        np.testing.assert_allclose(network(x.reshape(5, -1).double().numpy()), model(x).double().numpy(),
                                   rtol=1e-4, atol=1e-5)
    # normalisation+conv+BN one affine map, ReLU, then avg-pool+flatten+linear another
    assert [type(layer).__name__ for layer in network.layers] == ["Affine", "ReLU", "Affine"]


def test_output_lower_bounds_are_sound() -> None:
    network = from_torch(mlp(13), (6,))
    rng = np.random.default_rng(0)
    lower, upper = np.full(6, 0.3), np.full(6, 0.6)
    bounds = symbolic_bounds(network, lower, upper)
    c = rng.normal(size=(5, 4))
    y = network(rng.uniform(lower, upper, size=(20000, 6)))
    assert ((y @ c.T).min(0) >= output_lower_bounds(network, bounds, c) - 1e-9).all()


def test_bisection_hands_a_stuck_question_to_one_milp_on_the_bracket(monkeypatch) -> None:
    """A question near the answer that runs out of its share of time: the MILP over the ball of the best
    distortion so far finishes the job, and the result is the MILP's optimum."""
    from threedb.robustness.verification import distortion

    network = from_torch(mlp(11), (6,))
    x = np.full(6, 0.5)
    label = int(network(x).argmax())
    reference = minimum_distortion(network, x, label, norm="linf", max_eps=0.5, options=VerifierOptions(timeout=60))
    real_verify, calls = distortion.verify, []

    def verify_that_gets_stuck(*args, **kwargs):
        calls.append(1)
        result = real_verify(*args, **kwargs)
        if len(calls) == 3 and result.status == "unsat":   # the third question "times out"
            result.status = "timeout"
        return result

    monkeypatch.setattr(distortion, "verify", verify_that_gets_stuck)
    result = distortion.bisect_distortion(network, x, label, max_eps=0.5, tolerance=1e-5,
                                          options=VerifierOptions(timeout=60))
    assert any(str(s["status"]).startswith("milp") for s in result.stats["steps"]), result.stats
    assert result.status == "optimal" and abs(result.distortion - reference.distortion) <= 1e-5
    assert result.lower_bound <= reference.distortion + 1e-9
