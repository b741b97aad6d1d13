"""threedb.robustness.attacks on real, tiny models trained here: an MLP on the MNIST test set
(/work/shared/data/mnist) and a small segmentation net on the shipped quickstart_heldout masks."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from threedb.robustness.attacks import (APGD, APGDT, BPDA, FGSM, PGD, AttackError, Segmentation, Square,
                                        TowardsTarget, background_target, evaluate_ensemble, object_removal,
                                        perturbation_norm, summarize)

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
HELDOUT = REPO / "assets" / "datasets" / "quickstart_heldout"


def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    if not (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test set not found at {MNIST}")
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.tensor(images).float() / 255, torch.tensor(labels).long()


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 1e-3) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def mnist_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An MLP trained for 2 epochs on 8000 MNIST test images (~93% on 200 held-out ones)."""
    torch.set_num_threads(1)
    x, y = load_mnist()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    fit(model, x[:8000], y[:8000], epochs=2)
    return model, x[8000:8200], y[8000:8200]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def batch_with_extremes(x: torch.Tensor) -> torch.Tensor:
    """MNIST images (mostly pixels at exactly 0 or 1) plus an all-black and an all-white image."""
    return torch.cat([x[:14], torch.zeros_like(x[:1]), torch.ones_like(x[:1])])


ATTACKS = {
    "fgsm": lambda norm, eps: FGSM(norm=norm, eps=eps),
    "pgd": lambda norm, eps: PGD(norm=norm, eps=eps, steps=5, step_size=eps),
    "apgd-ce": lambda norm, eps: APGD(norm=norm, eps=eps, steps=6, restarts=2),
    "apgd-dlr": lambda norm, eps: APGD(norm=norm, eps=eps, steps=6, loss="dlr"),
    "apgd-t": lambda norm, eps: APGDT(norm=norm, eps=eps, steps=5, target_classes=3),
    "square": lambda norm, eps: Square(eps=eps, queries=60),
}


@pytest.mark.parametrize("name,norm,eps", [(name, norm, eps) for name in sorted(ATTACKS)
                                            for norm, eps in (("linf", 0.1), ("l2", 1.5))
                                            if not (name == "square" and norm == "l2")])  # Square is L-inf
def test_outputs_respect_ball_and_box(mnist_mlp, name, norm, eps):
    model, x, y = mnist_mlp
    xb = batch_with_extremes(x)
    yb = torch.cat([y[:14], torch.tensor([3, 7])])
    result = ATTACKS[name](norm, eps)(model, xb, yb)
    assert result.adv.shape == xb.shape
    assert float(result.adv.min()) >= 0.0 and float(result.adv.max()) <= 1.0
    assert float(perturbation_norm(result.adv - xb, norm).max()) <= eps * (1 + 1e-5) + 1e-6
    # The attack moved the inputs (it did something), including away from the box's faces.
    assert float(perturbation_norm(result.adv - xb, norm).max()) > 0.5 * eps
    assert result.success.shape == (16,) and result.queries.shape == (16,)


@pytest.fixture(scope="module")
def weak_mlp() -> nn.Module:
    """A weak MNIST model: 32 hidden units, one epoch on 1000 images (~50% accuracy)."""
    x, y = load_mnist()
    torch.manual_seed(0)
    return fit(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)), x[:1000], y[:1000], 1)


@pytest.mark.parametrize("attack", [PGD(eps=0.3, steps=20, targeted=True), APGD(eps=0.3, steps=20, targeted=True)],
                         ids=["pgd", "apgd"])
def test_targeted_attacks_reach_their_target(mnist_mlp, weak_mlp, attack):
    _, x, y = mnist_mlp
    target = (y + 1) % 10
    result = attack(weak_mlp, x, y, target=target)
    with torch.no_grad():
        pred = weak_mlp(result.adv).argmax(1)
    assert float((pred == target).float().mean()) >= 0.97
    assert torch.equal(result.success, pred == target)


@pytest.mark.parametrize("make", [lambda r: PGD(eps=0.08, steps=5, restarts=r),
                                  lambda r: APGD(eps=0.08, steps=5, restarts=r)], ids=["pgd", "apgd"])
def test_more_restarts_never_weaken(mnist_mlp, make):
    model, x, y = mnist_mlp
    one, three = make(1)(model, x, y), make(3)(model, x, y)
    assert bool((three.success | ~one.success).all()), "a success of 1 restart was lost with 3"
    same = three.success == one.success
    assert bool((three.extra["loss"][same] >= one.extra["loss"][same] - 1e-6).all())
    assert bool((three.extra["loss"] > one.extra["loss"] + 1e-6).any())  # the extra restarts found stronger points


@pytest.mark.parametrize("make", [lambda s: PGD(eps=0.1, steps=3, seed=s), lambda s: APGD(eps=0.1, steps=3, seed=s),
                                  lambda s: Square(eps=0.1, queries=30, seed=s)], ids=["pgd", "apgd", "square"])
def test_same_seed_same_result(mnist_mlp, make):
    model, x, y = mnist_mlp
    a, b, c = make(0)(model, x[:32], y[:32]), make(0)(model, x[:32], y[:32]), make(1)(model, x[:32], y[:32])
    assert torch.equal(a.adv, b.adv) and torch.equal(a.success, b.success) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.adv, c.adv)


def test_apgd_at_least_as_strong_as_pgd_at_equal_steps(mnist_mlp):
    model, x, y = mnist_mlp
    pgd = PGD(eps=0.1, steps=20)(model, x, y)
    apgd = APGD(eps=0.1, steps=20)(model, x, y)
    assert accuracy(model, x, y) > 0.85
    assert accuracy(model, apgd.adv, y) <= accuracy(model, pgd.adv, y)
    assert accuracy(model, apgd.adv, y) < 0.5


def test_apgdt_is_untargeted_and_at_least_as_strong_as_its_first_target(mnist_mlp):
    model, x, y = mnist_mlp
    one = APGDT(eps=0.1, steps=10, target_classes=1)(model, x, y)
    three = APGDT(eps=0.1, steps=10, target_classes=3)(model, x, y)
    with torch.no_grad():
        assert torch.equal(three.success, model(three.adv).argmax(1) != y)
    assert bool((three.success | ~one.success).all())
    # Targets after the first are run only on the examples still robust: fewer queries than 3 full runs.
    assert float(three.queries.float().mean()) < 1 + 3 * 11


class NoGradients(nn.Module):
    """The model behind a wall: outputs carry no gradient at all (only queries work)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)


def test_square_breaks_an_undefended_model_without_gradients(mnist_mlp):
    model, x, y = mnist_mlp
    wall = NoGradients(model)
    with pytest.raises(AttackError, match="BPDA"):
        PGD(eps=0.1, steps=2)(wall, x, y)
    # The naive evaluation takes the missing gradient as zero: only the random start moves the input.
    naive = PGD(eps=0.1, steps=2, gradient_check=False)(wall, x, y)
    assert accuracy(model, naive.adv, y) > accuracy(model, x, y) - 0.1
    attack = Square(eps=0.1, queries=300)
    assert attack.uses_gradients is False
    result = attack(wall, x, y)
    clean, robust = accuracy(model, x, y), accuracy(model, result.adv, y)
    assert clean > 0.85 and robust < clean - 0.3
    assert int(result.gradients.sum()) == 0
    # An example stops being queried once broken; the unbroken ones use the whole budget.
    assert bool((result.queries[~result.success] == 300).all())
    assert bool((result.queries[result.success] < 300).all())
    with torch.no_grad():
        assert torch.equal(result.success, model(result.adv).argmax(1) != y)


def test_dlr_needs_three_classes():
    torch.manual_seed(0)
    two = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    with pytest.raises(AttackError, match="at least 3 classes"):
        APGD(eps=0.1, steps=2, loss="dlr")(two, x, y)
    three = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(AttackError, match="at least 4 classes"):
        APGDT(eps=0.1, steps=2)(three, x, y)
    with pytest.raises(AttackError, match="classification only"):
        APGD(eps=0.1, loss="dlr", task=Segmentation())


@pytest.mark.parametrize("make", [lambda: PGD(eps=8), lambda: APGD(eps=-0.1), lambda: APGDT(eps=1.5),
                                  lambda: Square(eps=2.0), lambda: FGSM(eps=255)])
def test_linf_eps_outside_unit_interval_is_refused(make):
    with pytest.raises(AttackError, match=r"outside \[0, 1\]"):
        make()


def test_untargeted_attack_refuses_target(mnist_mlp):
    model, x, y = mnist_mlp
    for attack in (PGD(eps=0.1, steps=1), APGD(eps=0.1, steps=1), Square(eps=0.1, queries=2)):
        with pytest.raises(AttackError, match="untargeted"):
            attack(model, x[:4], y[:4], target=y[:4])
    with pytest.raises(AttackError, match="pass target="):
        APGD(eps=0.1, steps=1, targeted=True)(model, x[:4], y[:4])


def test_ensemble_worst_case_is_the_per_example_minimum(mnist_mlp):
    model, x, y = mnist_mlp
    attacks = {"fgsm": FGSM(eps=0.08), "pgd": PGD(eps=0.08, steps=2), "square": Square(eps=0.08, queries=100)}
    result = evaluate_ensemble(model, x, y, attacks)
    stacked = torch.stack([result.clean_score, *(result.scores[n] for n in attacks)])
    assert torch.equal(result.worst_score, stacked.min(0).values)
    names = ["clean", *attacks]
    for i, name in enumerate(result.worst_attack):
        assert float(stacked[names.index(name), i]) == float(result.worst_score[i])
        # "clean" exactly where no attack did worse than the clean input; else the first attack that did.
        assert names.index(name) == int((stacked[:, i] == result.worst_score[i]).nonzero()[0])
    with torch.no_grad():
        assert torch.equal((model(result.worst_adv).argmax(1) == y).float(), result.worst_score)
    summary = summarize(result)
    worst = summary["robust_accuracy"]["worst"]
    for name in attacks:
        assert worst <= summary["robust_accuracy"][name]
        assert summary["mean_queries"][name] == float(result.results[name].queries.float().mean())
        assert 0 < summary["mean_perturbation_norm"][name] <= 0.08 + 1e-6
    assert worst < min(summary["robust_accuracy"][n] for n in attacks)  # the attacks break different examples
    assert summary["clean_accuracy"] == pytest.approx(accuracy(model, x, y))
    correct = result.clean_score == 1
    assert summary["success_rate"]["pgd"] == pytest.approx(float(result.results["pgd"].success[correct].float().mean()))
    assert summary["mean_gradients"]["square"] == 0 and summary["mean_gradients"]["pgd"] == 2


def test_ensemble_cascade_attacks_only_the_still_robust(mnist_mlp):
    model, x, y = mnist_mlp
    attacks = {"fgsm": FGSM(eps=0.08), "pgd": PGD(eps=0.08, steps=10)}
    result = evaluate_ensemble(model, x, y, attacks, cascade=True)
    clean_ok = result.clean_score == 1
    assert torch.equal(result.attacked["fgsm"], clean_ok)
    still = clean_ok.clone()
    still[clean_ok] = ~result.results["fgsm"].success
    assert torch.equal(result.attacked["pgd"], still)
    assert result.results["pgd"].adv.shape[0] == int(still.sum())
    assert bool(result.scores["pgd"][~still].isnan().all())
    full = evaluate_ensemble(model, x, y, attacks)
    assert float(result.worst_score.mean()) == pytest.approx(float(full.worst_score.mean()), abs=0.03)
    with pytest.raises(AttackError, match="reserved"):
        evaluate_ensemble(model, x, y, {"clean": FGSM(eps=0.1)})


def test_bpda_straight_through_is_exact_forward_and_identity_backward(mnist_mlp):
    model, x, _ = mnist_mlp

    def quantise(v: torch.Tensor) -> torch.Tensor:
        return torch.round(v * 4) / 4

    wrapped = BPDA(model, quantise)
    xs = x[:8].clone().requires_grad_(True)
    out = wrapped(xs)
    with torch.no_grad():
        assert torch.equal(out, model(quantise(x[:8])))
    (grad,) = torch.autograd.grad(out[:, 3].sum(), xs)
    z = quantise(x[:8]).requires_grad_(True)
    (expected,) = torch.autograd.grad(model(z)[:, 3].sum(), z)
    assert torch.allclose(grad, expected) and float(grad.abs().max()) > 0
    with pytest.raises(AttackError, match="approximation="):
        BPDA(model, lambda v: v.repeat(1, 2, 1, 1))(x[:2])


def shipped_masks_32() -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped renders at 32 px in [0, 1] and their object masks (0/1 labels) at 32 px."""
    from threedb.evaluators.datasets import ImageDataset

    torch.set_num_threads(1)
    ds = ImageDataset(HELDOUT)
    items = [ds[i] for i in range(len(ds))]
    x = F.interpolate(torch.stack([it[0] for it in items]).float() / 255, size=32, mode="area")
    masks = torch.stack([torch.as_tensor(it[2]["mask"]) for it in items]).float()[:, None]
    return x, F.interpolate(masks, size=32, mode="nearest")[:, 0].long()


@pytest.fixture(scope="module")
def segmentation_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 3-layer fully convolutional object/background net trained on the shipped renders' masks at 32 px."""
    x, m = shipped_masks_32()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=2, dilation=2),
                        nn.ReLU(), nn.Conv2d(16, 2, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    weight = torch.tensor([1.0, 3.0])  # objects cover ~12% of the pixels
    for _ in range(25):
        perm = torch.randperm(360)
        for i in range(0, 360, 40):
            idx = perm[i:i + 40]
            loss = F.cross_entropy(net(x[idx]), m[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval(), x[360:], m[360:]


def test_pgd_lowers_pixel_accuracy_of_a_segmentation_net(segmentation_net):
    net, x, m = segmentation_net
    task = Segmentation()
    with torch.no_grad():
        clean = float(task.score(net(x), m).mean())
    result = PGD(eps=8 / 255, steps=10, task=task)(net, x, m)
    with torch.no_grad():
        adv = task.score(net(result.adv), m)
    assert clean > 0.9, "the segmentation net did not learn (it should beat the all-background 0.88)"
    assert float(adv.mean()) < clean - 0.25
    assert torch.equal(result.success, adv < 0.5)
    apgd = APGD(eps=8 / 255, steps=10, task=task)(net, x, m)
    with torch.no_grad():
        assert float(task.score(net(apgd.adv), m).mean()) < clean - 0.25
    square = Square(eps=8 / 255, queries=100, loss="ce", task=task)(net, x, m)
    with torch.no_grad():
        assert float(task.score(net(square.adv), m).mean()) < clean - 0.1
    with pytest.raises(AttackError, match="margin loss is for classification"):
        Square(eps=8 / 255, task=task)



@pytest.fixture(scope="module")
def segmentation_unet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny UNet (width 8, depth 2: a receptive field over the whole object) trained with Adam for 150
    steps on 360 shipped renders' masks at 32 px (clean F ~0.88 on the other 80), a few seconds."""
    from threedb.evaluators.architectures import UNet

    x, m = shipped_masks_32()
    torch.manual_seed(0)
    net = UNet(2, width=8, depth=2)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, 360, (32,), generator=order)
        loss = F.cross_entropy(net(x[idx]), m[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), x[360:], m[360:]


def foreground_f(net: nn.Module, x: torch.Tensor, m: torch.Tensor) -> float:
    from threedb.robustness.metrics import f_measure

    with torch.no_grad():
        return float(f_measure(net(x).argmax(1), m).mean())


def test_object_removal_lowers_f_more_than_untargeted_and_runs_in_the_ensemble(segmentation_unet):
    """Untargeted pixel-wise CE spends its budget on background pixels already flipped (their CE is
    unbounded); the targeted CE towards all background is bounded below, so the object itself vanishes."""
    net, x, m = segmentation_unet
    task, eps = Segmentation(), 16 / 255
    untargeted = PGD(eps=eps, steps=10, task=task)
    removal = object_removal(PGD(eps=eps, steps=10, step_size=eps / 2, schedule="cosine", targeted=True, task=task))
    assert removal.name == "pgd-removal" and not removal.targeted
    assert removal.describe()["via"]["targeted"] and removal.describe()["target"] == "all background (class 0)"
    result = evaluate_ensemble(net, x, m, {"pgd": untargeted, "pgd-removal": removal}, task=task)
    clean_f = foreground_f(net, x, m)
    f_untargeted = foreground_f(net, result.results["pgd"].adv, m)
    f_removal = foreground_f(net, result.results["pgd-removal"].adv, m)
    print(f"\nsegmentation net F: clean {clean_f:.3f}, PGD-10 {f_untargeted:.3f}, removal PGD-10 {f_removal:.3f}")
    assert clean_f > 0.7                                  # the UNet learned the masks
    assert f_removal < 0.5 * f_untargeted and f_removal < 0.2 * clean_f
    res = result.results["pgd-removal"]
    assert float(perturbation_norm(res.adv - x, "linf").max()) <= eps + 1e-6 and float(res.adv.min()) >= 0
    assert res.queries.tolist() == [12] * len(x) and res.gradients.tolist() == [10] * len(x)
    with torch.no_grad():   # success is the untargeted goal on m, the targeted one is kept in extra
        out = net(res.adv)
    assert torch.equal(res.success, task.success(out, m))
    assert torch.equal(res.extra["target_success"], task.success(out, m, torch.zeros_like(m)))
    # the removal attack's predictions are mostly background: the object vanished
    assert float((out.argmax(1) == 1).float().mean()) < float((net(x).argmax(1) == 1).float().mean()) / 2
    with pytest.raises(AttackError, match="wraps a targeted attack"):
        TowardsTarget(untargeted, background_target)
    with pytest.raises(AttackError, match="segmentation attack"):
        object_removal(PGD(eps=eps, targeted=True))
    with pytest.raises(AttackError, match="must return integer labels"):
        TowardsTarget(removal.attack, lambda y: y.float())(net, x[:2], m[:2])
