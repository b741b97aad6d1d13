"""Gradient masking is not robustness (seed 003; Athalye et al. 2018), shown on MNIST
(/work/shared/data/mnist) with classifiers trained here:

(a) a thermometer-encoding defence is not differentiable: a plain gradient attack refuses it (BPDA),
    the naive evaluation (``gradient_check=False``) makes it look robust, and BPDA through a soft
    thermometer brings it down to the undefended classifier's robust accuracy;
(b) a randomized defence (random resize and pad, Xie et al. 2018) holds better against single-draw
    PGD than against EOT-PGD, which averages the gradient over the randomness.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from test_attacks import accuracy, fit, load_mnist
from threedb.robustness.attacks import APGD, BPDA, EOT, PGD, AttackError, GradientError, Square

LEVELS = 14
EPS = 0.15


def thermometer(x: torch.Tensor) -> torch.Tensor:
    """``LEVELS`` channels per input channel: channel ``k`` is 1 where the pixel is ``> k / LEVELS``.

    Built from ``ceil`` so autograd runs through it and yields an exactly-zero gradient (what a
    defence that quantises its input gives an attacker).
    """
    levels = torch.arange(LEVELS, dtype=x.dtype, device=x.device).view(1, 1, LEVELS, 1, 1)
    return (torch.ceil(x.unsqueeze(2) * LEVELS) - levels).clamp(0, 1).flatten(1, 2)


def soft_thermometer(x: torch.Tensor) -> torch.Tensor:
    """The differentiable approximation: channel ``k`` ramps linearly from 0 to 1 over ``[k, k+1] / LEVELS``."""
    levels = torch.arange(LEVELS, dtype=x.dtype, device=x.device).view(1, 1, LEVELS, 1, 1)
    return (x.unsqueeze(2) * LEVELS - levels).clamp(0, 1).flatten(1, 2)


class Encoded(nn.Module):
    """``classifier(encode(x))``: a defended model of [0, 1] images."""

    def __init__(self, classifier: nn.Module, encode) -> None:
        super().__init__()
        self.classifier, self.encode = classifier, encode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encode(x))


def mlp(inputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, 128), nn.ReLU(), nn.Linear(128, 10))


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.set_num_threads(1)
    x, y = load_mnist()
    return x[:8000], y[:8000], x[8000:8200], y[8000:8200]


@pytest.fixture(scope="module")
def thermometer_models(data) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(undefended MLP, thermometer classifier on encodings, defended model of images)``."""
    xtr, ytr, _, _ = data
    torch.manual_seed(0)
    plain = fit(mlp(784), xtr, ytr, epochs=2)
    torch.manual_seed(0)
    classifier = fit(mlp(784 * LEVELS), thermometer(xtr), ytr, epochs=2)
    return plain, classifier, Encoded(classifier, thermometer).eval()


def test_plain_gradient_attack_refuses_a_thermometer_defence(data, thermometer_models):
    _, _, defended = thermometer_models
    _, _, x, y = data
    for attack in (PGD(eps=EPS, steps=5), APGD(eps=EPS, steps=5)):
        with pytest.raises(GradientError, match="BPDA"):
            attack(defended, x, y)


def test_thermometer_looks_robust_naively_and_bpda_breaks_it(data, thermometer_models):
    plain, classifier, defended = thermometer_models
    _, _, x, y = data
    clean_plain, clean_defended = accuracy(plain, x, y), accuracy(defended, x, y)
    assert clean_plain > 0.85 and clean_defended > 0.85

    undefended = accuracy(plain, PGD(eps=EPS, steps=20)(plain, x, y).adv, y)
    naive = accuracy(defended, PGD(eps=EPS, steps=20, gradient_check=False)(defended, x, y).adv, y)
    bpda_model = BPDA(classifier, thermometer, soft_thermometer)
    bpda = accuracy(defended, PGD(eps=EPS, steps=20)(bpda_model, x, y).adv, y)
    # The gradient-free attack needs no BPDA and is not fooled either.
    square = accuracy(defended, Square(eps=EPS, queries=200)(defended, x, y).adv, y)

    assert naive >= clean_defended - 0.15, "the naive evaluation should make the defence look robust"
    assert bpda <= undefended + 0.15, (bpda, undefended)
    assert bpda <= naive - 0.5, (bpda, naive)
    assert square <= naive - 0.4, (square, naive)


def random_resize_pad(x: torch.Tensor, out: int = 36) -> torch.Tensor:
    """Xie et al.'s randomization: resize to a random side in ``[28, out - 4]``, zero-pad at a random place."""
    side = int(torch.randint(x.shape[-1], out - 3, (1,)))
    z = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    pad = out - side
    left, top = int(torch.randint(0, pad + 1, (1,))), int(torch.randint(0, pad + 1, (1,)))
    return F.pad(z, (left, pad - left, top, pad - top))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 5, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 6 * 6, 10))


class Augmented(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(random_resize_pad(x))


@pytest.fixture(scope="module")
def randomized(data) -> nn.Module:
    """A CNN trained under random resize and pad, and run under it: a randomized defence."""
    xtr, ytr, _, _ = data
    torch.manual_seed(0)
    model = Augmented(cnn())
    return fit(model, xtr, ytr, epochs=3)


def mean_accuracy_over_draws(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 7) -> float:
    """Accuracy of a randomized model averaged over ``draws`` evaluation draws (fixed seed)."""
    torch.manual_seed(1234)
    return sum(accuracy(model, x, y) for _ in range(draws)) / draws


def test_eot_beats_single_draw_pgd_on_a_randomized_defence(data, randomized):
    _, _, x, y = data
    clean = mean_accuracy_over_draws(randomized, x, y)
    attack = PGD(eps=0.12, steps=10, step_size=0.03)
    torch.manual_seed(0)
    single = mean_accuracy_over_draws(randomized, attack(randomized, x, y).adv, y)
    torch.manual_seed(0)
    eot = mean_accuracy_over_draws(randomized, attack(EOT(randomized, samples=10), x, y).adv, y)
    assert clean > 0.85
    assert single < clean - 0.2  # the defence is differentiable: single draws do something
    assert eot <= single - 0.06, (eot, single)


def test_eot_averages_draws():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.rand(3, 3, 2, 2)
    with torch.no_grad():
        assert torch.allclose(EOT(net, samples=4)(x), net(x).log_softmax(1), atol=1e-6)
        assert torch.allclose(EOT(net, samples=4, average="logits")(x), net(x), atol=1e-6)
        noisy = EOT(lambda v: net(v + 0.5 * torch.randn_like(v)), samples=200)(x)
        assert torch.allclose(noisy.exp().sum(1), torch.ones(3), atol=1e-5)
        assert not torch.allclose(noisy, net(x).log_softmax(1), atol=1e-3)
    with pytest.raises(AttackError, match="samples"):
        EOT(net, samples=0)
    with pytest.raises(AttackError, match="average"):
        EOT(net, average="median")
