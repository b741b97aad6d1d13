"""Peer attack libraries (torchattacks 3.5.1, ART 1.20.1) run on the same model, images and budget as
threedb's attacks: the anchors of ``benchmarks/attack_peers.py`` and ``tests/test_attack_peers.py``.

Each runner takes a model of [0, 1] images (normalisation inside), images ``x`` and labels ``y`` and
returns the adversarial images; settings are mapped one to one (eps, steps, step size, restarts,
queries). Installed by ``scripts/setup.sh`` (the ``peers`` extra; torchattacks without its deps).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def art_classifier(model: nn.Module, x: torch.Tensor, num_classes: int):
    """ART's PyTorchClassifier around ``model`` (inputs in [0, 1], CPU or the model's device)."""
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=num_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def _art_run(attack, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = attack.generate(x=x.detach().cpu().numpy().astype(np.float32))
    return torch.from_numpy(adv).to(x.device)


def torchattacks_pgd(eps: float, steps: int, step_size: float, seed: int = 0) -> Runner:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torchattacks

        torch.manual_seed(seed)
        return torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=True)(x, y)
    return run


def art_pgd(eps: float, steps: int, step_size: float, restarts: int, num_classes: int,
            batch_size: int) -> Runner:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from art.attacks.evasion import ProjectedGradientDescent

        attack = ProjectedGradientDescent(art_classifier(model, x, num_classes), norm=np.inf, eps=eps,
                                          eps_step=step_size, max_iter=steps, num_random_init=restarts,
                                          batch_size=batch_size, verbose=False)
        return _art_run(attack, x)
    return run


def torchattacks_apgd(eps: float, steps: int, loss: str, seed: int = 0) -> Runner:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torchattacks

        return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss=loss,
                                 seed=seed)(x, y)
    return run


def art_apgd(eps: float, steps: int, loss: str, num_classes: int, batch_size: int) -> Runner:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from art.attacks.evasion import AutoProjectedGradientDescent

        attack = AutoProjectedGradientDescent(
            art_classifier(model, x, num_classes), norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
            nb_random_init=1, batch_size=batch_size,
            loss_type="cross_entropy" if loss == "ce" else "difference_logits_ratio", verbose=False)
        return _art_run(attack, x)
    return run


def torchattacks_square(eps: float, queries: int, seed: int = 0) -> Runner:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torchattacks

        return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1, p_init=0.8,
                                   loss="margin", seed=seed)(x, y)
    return run


def art_square(eps: float, queries: int, num_classes: int, batch_size: int) -> Runner:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from art.attacks.evasion import SquareAttack

        attack = SquareAttack(art_classifier(model, x, num_classes), norm=np.inf, max_iter=queries, eps=eps,
                              p_init=0.8, nb_restarts=1, batch_size=batch_size, verbose=False)
        return _art_run(attack, x)
    return run


def robust_accuracy(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` on ``adv`` (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def standard_error(p: float, n: int) -> float:
    """One binomial standard error of an accuracy ``p`` over ``n`` examples."""
    return float(np.sqrt(max(p * (1 - p), 0.0) / n)) if n else float("nan")
