"""threedb.robustness.relu_stability: the thesis' worked example, soundness of both kinds of bounds on
random MLPs and CNNs, exactness of the push-back, the RS loss, counts, pruning, and the training
objective built on them (threedb.robustness.training.ReLUStabilityTraining)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from threedb.evaluators.architectures import MnistCNN, MnistMLP
from threedb.robustness.models import Normalized
from threedb.robustness.relu_stability import (OFF_BIAS, StabilityError, input_box, l1_norm, live_relus, preactivation_bounds,
                                               prune_relus, prune_weights, relu_activity, rs_loss, unstable_counts)
from threedb.robustness.training import PGDTraining, ReLUStabilityTraining
from threedb.robustness.verification.network import from_torch

pytestmark = pytest.mark.usefixtures("one_thread")


def worked_example() -> nn.Sequential:
    """Thesis ch. 6: W1 = [1, -1]^T, b1 = [2, 2], W2 = [1, 1] (a ReLU after it, to have its bounds)."""
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU()).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[0].bias.copy_(torch.tensor([2.0, 2.0]))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        net[2].bias.zero_()
    return net


def test_worked_example_naive_3_5_improved_exactly_4():
    x = torch.full((1, 1), 0.5, dtype=torch.float64)          # eps 0.5: the box [0, 1]
    naive = preactivation_bounds(worked_example(), x, 0.5, "naive")
    improved = preactivation_bounds(worked_example(), x, 0.5, "improved")
    for bounds in (naive, improved):                            # hidden layer: [2, 3] and [1, 2]
        assert bounds[0][0].tolist() == [[2.0, 1.0]] and bounds[0][1].tolist() == [[3.0, 2.0]]
    assert (naive[1][0].item(), naive[1][1].item()) == (3.0, 5.0)
    assert (improved[1][0].item(), improved[1][1].item()) == (4.0, 4.0)


def test_box_is_clipped_to_the_image_range_with_lower_below_upper():
    x = torch.tensor([[0.0, 0.05, 0.5, 0.97, 1.0]])
    lo, hi = input_box(x, 0.1)
    assert torch.allclose(lo, torch.tensor([[0.0, 0.0, 0.4, 0.87, 0.9]]))
    assert torch.allclose(hi, torch.tensor([[0.1, 0.15, 0.6, 1.0, 1.0]]))
    # the worked example at x = 0.9, eps 0.5: the box is [0.4, 1], not [0.4, 1.4]
    naive = preactivation_bounds(worked_example(), torch.full((1, 1), 0.9, dtype=torch.float64), 0.5, "naive")
    assert naive[0][0][0].tolist() == pytest.approx([2.4, 1.0]) and naive[0][1][0].tolist() == pytest.approx([3.0, 1.6])
    with pytest.raises(StabilityError, match="eps"):
        input_box(x, -0.1)


def random_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 8), nn.ReLU(),
                         nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 3)).double()


def random_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    inner = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(5 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))
    return Normalized(inner, [0.4, 0.5, 0.6], [0.3, 0.2, 0.25]).double()


def activations(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The true pre-activations of every ReLU at inputs ``x`` (through the modules' own forward)."""
    found = []
    hooks = [m.register_forward_hook(lambda _m, inp, _out: found.append(inp[0].detach()))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return found


@pytest.mark.parametrize("build,shape", [(random_mlp, (1, 2, 6)), (random_cnn, (3, 8, 8))])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_points_never_leave_the_bounds_and_improved_is_inside_naive(build, shape, seed):
    model = build(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *shape, generator=gen, dtype=torch.float64)
    x[0, 0] = 0.0                                     # pixels at the box edges: the clip matters
    x[1, 0] = 1.0
    eps = 0.15
    naive = preactivation_bounds(model, x, eps, "naive")
    improved = preactivation_bounds(model, x, eps, "improved")
    lo, hi = input_box(x, eps)
    for k in range(3):                                # every example on its own box
        points = lo[k] + (hi[k] - lo[k]) * torch.rand(400, *shape, generator=gen, dtype=torch.float64)
        corners = torch.where(torch.rand(200, *shape, generator=gen, dtype=torch.float64) < 0.5, lo[k], hi[k])
        for acts in (activations(model, points), activations(model, corners)):
            for (nl, nu), (il, iu), z in zip(naive, improved, acts):
                assert (z >= il[k] - 1e-9).all() and (z <= iu[k] + 1e-9).all()
                assert (il[k] >= nl[k] - 1e-9).all() and (iu[k] <= nu[k] + 1e-9).all()
    assert len(naive) == 3 and naive[0][0].shape[0] == 3


def test_pushback_through_a_convolution_is_exact_when_its_relus_are_active():
    """conv -> ReLU (all active: large bias) -> flatten -> linear: the improved bound of the linear layer
    is the exact range of the composed affine map (from the verifier's exact conversion), the naive one
    is looser."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4),
                        nn.ReLU()).double()
    with torch.no_grad():
        net[0].bias.fill_(5.0)
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    eps = 0.2
    improved = preactivation_bounds(net, x, eps, "improved")
    naive = preactivation_bounds(net, x, eps, "naive")
    assert (improved[0][0] > 0).all()                           # every conv ReLU provably active
    affine = from_torch(nn.Sequential(net[0], net[2], net[3]), (1, 5, 5)).layers[0]
    w, b = torch.tensor(affine.weight), torch.tensor(affine.bias)
    lo, hi = input_box(x, eps)
    c, r = ((lo + hi) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
    exact_lo, exact_hi = c @ w.T + b - r @ w.abs().T, c @ w.T + b + r @ w.abs().T
    assert torch.allclose(improved[1][0], exact_lo, atol=1e-10) and torch.allclose(improved[1][1], exact_hi, atol=1e-10)
    assert ((naive[1][1] - naive[1][0]) > (exact_hi - exact_lo) + 1e-6).all()


def test_rs_loss_and_unstable_counts_on_given_bounds():
    lo = torch.tensor([[-1.0, 2.0, -3.0], [-1.0, -2.0, 0.0]])
    hi = torch.tensor([[1.0, 3.0, -1.0], [2.0, 1.0, 4.0]])
    layer2 = (torch.tensor([[-0.5], [0.5]]), torch.tensor([[0.5], [1.0]]))
    bounds = [(lo, hi), layer2]
    per_example = [
        -torch.tanh(torch.tensor(0.0)) - torch.tanh(torch.tensor(7.0)) - torch.tanh(torch.tensor(4.0))
        - torch.tanh(torch.tensor(0.75)),
        -torch.tanh(torch.tensor(-1.0)) - torch.tanh(torch.tensor(-1.0)) - torch.tanh(torch.tensor(1.0))
        - torch.tanh(torch.tensor(1.5)),
    ]
    assert rs_loss(bounds).item() == pytest.approx(float(sum(per_example) / 2))
    counts = unstable_counts(bounds)     # example 0: 1 + 1 unstable; example 1: 2 (0 < 4 is not l < 0) + 0
    assert counts["per_layer"] == [1.5, 0.5] and counts["total"] == 2.0
    assert counts["neurons"] == [3, 1] and counts["examples"] == 2
    live = [torch.tensor([True, True, False]), torch.tensor([False])]
    assert unstable_counts(bounds, live)["per_layer"] == [1.5, 0.0]


def test_rs_loss_steps_reduce_unstable_relus():
    torch.manual_seed(0)
    model = MnistMLP(hidden=(32, 32), input_channels=1, input_size=6).double()
    x = torch.rand(16, 1, 6, 6, dtype=torch.float64)
    before = unstable_counts(preactivation_bounds(model, x, 0.05, "improved"))["total"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = rs_loss(preactivation_bounds(model, x, 0.05, "improved"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = unstable_counts(preactivation_bounds(model, x, 0.05, "improved"))["total"]
    assert before > 10 and after < before / 2


def test_unsupported_layers_are_named():
    with pytest.raises(StabilityError, match="BatchNorm2d at position 1"):
        preactivation_bounds(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()), torch.rand(1, 1, 5, 5), 0.1)
    with pytest.raises(StabilityError, match="no ReLU"):
        preactivation_bounds(nn.Sequential(nn.Linear(2, 2)), torch.rand(1, 2), 0.1)


def test_mnist_architectures_are_verifiable_chains_with_the_thesis_relu_count():
    cnn = MnistCNN()
    x = torch.rand(2, 3, 28, 28)
    bounds = preactivation_bounds(cnn, x, 0.1, "naive")
    assert [b[0][0].numel() for b in bounds] == [3136, 1568, 100]
    network = from_torch(cnn, (3, 28, 28))
    assert network.describe()["relus"] == 4804
    assert torch.allclose(torch.tensor(network(x.double().reshape(2, -1).numpy())).float(), cnn(x), atol=1e-4)
    # the frozen gray average: three equal channels give what one channel gives to the bare network
    bare = MnistCNN(input_channels=1)
    gray = x[:, :1]
    with torch.no_grad():
        for i, j in ((1, 0), (3, 2), (6, 5), (8, 7)):
            bare[j].load_state_dict(cnn[i].state_dict())
    assert torch.allclose(cnn(gray.expand(-1, 3, -1, -1)), bare(gray), atol=1e-6)
    assert not cnn[0].weight.requires_grad and sum(p.numel() for p in cnn.parameters() if p.requires_grad) == 166_406


def test_pruning_weights_and_never_active_relus_keeps_the_function_on_the_measured_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].bias[0] = -10.0       # channel 0 of conv 1: never active (a whole channel)
        model[2].bias[1] = -10.0       # channel 1 of conv 2: never active (before a linear layer)
        model[5].bias[2] = -10.0       # FC unit 2: never active
        model[7].weight[0, 0] = 5e-4   # below the weight threshold
    x = torch.rand(32, 1, 8, 8)
    with torch.no_grad():
        reference = model(x)
    weights = prune_weights(model, 1e-3)
    assert weights["weights"] == 27 + 108 + 96 + 12 and weights["zeroed"] >= 1 and model[7].weight[0, 0] == 0
    with torch.no_grad():
        pruned_reference = model(x)
    assert torch.allclose(pruned_reference, reference, atol=1e-2)
    activity = relu_activity(model, [x[:16], x[16:]])
    assert [a.shape for a in activity] == [(3, 4, 4), (4, 2, 2), (6,)]
    report = prune_relus(model, activity, min_active=1e-9)        # only never-active ReLUs
    assert report[0]["forced_off"] == 16 and (model[0].weight[0] == 0).all() and model[0].bias[0] == OFF_BIAS
    assert report[1]["outgoing_zeroed"] >= 4 and report[2]["forced_off"] >= 1 and model[5].bias[2] == OFF_BIAS
    with torch.no_grad():
        assert torch.equal(model(x), pruned_reference)             # pruned ReLUs were never active on x
    live = live_relus(model, x)
    assert not live[1][1].any() and live[0].all() and live[2].all()
    bounds = preactivation_bounds(model, x, 0.1, "naive")
    assert (bounds[0][0][:, 0] == OFF_BIAS).all() and (bounds[0][1][:, 0] == OFF_BIAS).all()   # forced off


def test_relu_stability_objective_is_pgd_plus_rs_plus_l1():
    torch.manual_seed(0)
    model = Normalized(MnistMLP(hidden=(16,), input_size=6), None, None)
    x, y = torch.rand(8, 3, 6, 6), torch.randint(0, 10, (8,))
    pgd = PGDTraining(eps=0.1, steps=2, eps_ramp=0.5, eps_start=0.01)
    rs = ReLUStabilityTraining(eps=0.1, steps=2, rs_weight=0.01, l1=1e-3, rs_mode="improved")
    for objective in (pgd, rs):
        objective.set_progress(0.1)
    assert rs.current_eps == pytest.approx(0.01 + 0.09 * 0.2) == pytest.approx(pgd.current_eps)
    base, _ = pgd(model, x, y)
    total, logits = rs(model, x, y)
    expected = base + 0.01 * rs_loss(preactivation_bounds(model, x, 0.1, "improved")) + 1e-3 * l1_norm(model)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert logits.shape == (8, 10) and model.model[2].weight.grad.abs().sum() > 0
    summary = rs.epoch_summary()
    assert set(summary) == {"rs_loss", "train_unstable"} and rs.epoch_summary() == {}
    assert rs.describe()["rs_mode"] == "improved" and rs.describe()["eps_start"] == 0.01
    for bad in ({"rs_mode": "fancy"}, {"rs_weight": -1}, {"rs_eps": 2.0}, {"l1": -1e-5}):
        with pytest.raises(ValueError):
            ReLUStabilityTraining(**bad)


def test_eps_ramp_starts_at_eps_start():
    ramped = PGDTraining(eps=0.1, steps=2, eps_ramp=0.5, eps_start=0.01)
    for progress, eps in ((0.0, 0.01), (0.25, 0.055), (0.5, 0.1), (0.9, 0.1)):
        ramped.set_progress(progress)
        assert ramped.current_eps == pytest.approx(eps)
    with pytest.raises(ValueError, match="eps_start"):
        PGDTraining(eps=0.1, eps_start=0.2)


def test_shipped_mnist_rs_model_matches_its_card_and_is_stable_on_the_heldout_images():
    """assets/models/mnist_rs (configs/mnist_train_rs.yaml) on assets/datasets/mnist_heldout (MNIST test
    images 9900..9999): its weights are the card's, it is a verifiable chain, 95% of the images are
    classified right, and its unstable ReLUs at eps 0.1 are about 600 of 4804 per image (the control
    training without RS leaves about 2100 on the test split)."""
    from pathlib import Path

    from threedb.evaluators.datasets import ImageDataset
    from threedb.evaluators.models import load_model
    from threedb.evaluators.pixel_space import pixel_model
    from threedb.evaluators.training.card import verify_card

    repo = Path(__file__).resolve().parents[1]
    folder = repo / "assets" / "models" / "mnist_rs"
    card = verify_card(folder)
    loaded = load_model(card["inference"], base_dir=folder, device=torch.device("cpu"), check_output=False)
    model, pre = pixel_model(loaded)
    ds = ImageDataset(repo / "assets" / "datasets" / "mnist_heldout", extras=False)
    x = pre([ds[i][0].permute(1, 2, 0) for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    assert x.shape == (100, 3, 28, 28) and ds.classes == [str(i) for i in range(10)]
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.93
    assert from_torch(model, (3, 28, 28)).describe()["relus"] == 4804
    live = live_relus(model, x)
    naive = unstable_counts(preactivation_bounds(model, x, 0.1, "naive"), live)
    improved = unstable_counts(preactivation_bounds(model, x, 0.1, "improved"), live)
    assert naive["total"] == pytest.approx(606.5, abs=0.5) and improved["total"] < naive["total"] - 10
    st = card["robustness"]["relu_stability"]
    assert st["eps"] == 0.1 and st["examples"] == 2000 and st["naive"]["total"] == pytest.approx(sum(st["naive"]["per_layer"]))
    assert abs(st["naive"]["total"] - naive["total"]) < 50          # test split vs held-out images
    assert card["training"]["objective"] == "relu_stability" and card["robustness"]["pruning"]["relus"]
