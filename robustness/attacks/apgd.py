"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness...") and AutoAttack's APGD-T.

APGD is PGD without a step-size to tune: from ``x_0`` (a random point of the ball), with initial
step ``eta = 2 * eps`` (per example),

* ``x_1 = P(x_0 + eta * dir(grad f(x_0)))``,
* ``z_{k+1} = P(x_k + eta * dir(grad f(x_k)))``,
  ``x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1}))`` with momentum ``alpha = 0.75``,

where ``P`` projects onto the ball **and** the ``[0, 1]`` box and ``dir`` is ``sign`` (L-inf) or
``g / ||g||_2`` (L2). At the checkpoints ``w_j = ceil(p_j * steps)``, ``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, an example's step is halved and its iterate reset
to the best (highest-loss) point found so far when

1. the loss rose on fewer than ``rho * (w_j - w_{j-1})`` of the steps since the last checkpoint, or
2. the step was not halved at the last checkpoint and the best loss has not improved since it.

The strongest point of any step of any restart is returned per example (successful first, then
highest loss), so more restarts never weaken the attack.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from threedb.robustness.attacks.base import (Attack, AttackError, AttackResult, Best, Classification, Model,
                                             Norm, Task, clip_to_threat, dlr_loss, keep_stronger,
                                             normalized_gradient, random_in_ball)

Loss = Literal["ce", "dlr"]
MOMENTUM = 0.75


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` (``j >= 1``, strictly inside ``(0, steps)``) where APGD
    may halve its step: ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``."""
    prev, cur, out = 0.0, 0.22, []
    while cur < 1.0:
        w = math.ceil(cur * steps - 1e-9)
        if 0 < w < steps and (not out or w > out[-1]):
            out.append(w)
        prev, cur = cur, cur + max(cur - prev - 0.03, 0.06)
    return out


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


class APGD(Attack):
    """Auto-PGD, L-inf or L2, with the cross-entropy (``"ce"``) or DLR (``"dlr"``, classification with
    >= 3 classes; >= 4 when targeted) loss, untargeted or targeted (``targeted=True`` and ``target=``
    labels in the call).

    ``steps`` gradient steps per restart (``steps + 1`` forward passes), ``restarts`` random starts,
    ``rho`` the fraction of loss-increasing steps below which the step is halved. ``extra["loss"]``
    holds the per-example loss at the returned point.
    """

    name = "apgd"

    def __init__(self, *, norm: Norm = "linf", eps: float = 8 / 255, steps: int = 100, restarts: int = 1,
                 loss: Loss = "ce", targeted: bool = False, rho: float = 0.75, task: Task | None = None,
                 seed: int = 0, gradient_check: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, task=task, loss=loss, targeted=targeted, seed=seed,
                         gradient_check=gradient_check)
        if steps < 1 or restarts < 1:
            raise AttackError(f"steps and restarts must be >= 1 (got {steps}, {restarts})")
        if not 0 < rho <= 1:
            raise AttackError(f"rho must be in (0, 1], got {rho}")
        if loss not in ("ce", "dlr"):
            raise AttackError(f"unknown loss {loss!r} for APGD: use ce or dlr")
        if loss == "dlr" and not isinstance(self.task, Classification):
            raise AttackError(f"the DLR loss is for classification only (task {self.task.name}): use loss ce")
        self.steps, self.restarts, self.rho = steps, restarts, float(rho)

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        best = Best.start(x)
        for restart in range(self.restarts):
            self._ascend(model, x, y, target, target, generator, best, first=restart == 0)
        n = x.shape[0]
        queries = torch.full((n,), self.restarts * (self.steps + 1), dtype=torch.long, device=x.device)
        grads = torch.full((n,), self.restarts * self.steps, dtype=torch.long, device=x.device)
        return AttackResult(best.adv, best.success, queries, grads, {"loss": best.loss})

    def _ascend(self, model: Model, x: torch.Tensor, y: torch.Tensor, loss_target: Optional[torch.Tensor],
                success_target: Optional[torch.Tensor], generator: torch.Generator, best: Best, *,
                first: bool, loss: Optional[str] = None, rank: Optional[torch.Tensor] = None) -> None:
        """One APGD run from a random start, updating ``best`` in place.

        The loss is ``task.loss(out, y, loss, loss_target)`` and success ``task.success(out, y,
        success_target)``; ``best`` ranks points by ``rank(out)`` when given (APGD-T compares the
        points of different targets with one loss), else by that loss.
        """
        n, steps = x.shape[0], self.steps
        dev = x.device

        def update_best(x_cur: torch.Tensor, loss_cur: torch.Tensor, out: torch.Tensor) -> None:
            keep_stronger(best, x_cur, rank(out) if rank is not None else loss_cur,
                          self.task.success(out, y, success_target))

        x_cur = random_in_ball(x, self.norm, self.eps, generator)
        eta = torch.full((n,), 2 * self.eps, device=dev, dtype=x.dtype)
        marks = set(checkpoints(steps))
        x_prev = x_cur.clone()
        x_max = x_cur.clone()
        f_max = torch.full((n,), -math.inf, device=dev, dtype=x.dtype)
        grad_max = torch.zeros_like(x)
        f_max_last_mark = f_max.clone()
        halved_last_mark = torch.zeros(n, dtype=torch.bool, device=dev)
        increases = torch.zeros(n, device=dev, dtype=x.dtype)
        last_mark, loss_prev = 0, None
        for k in range(steps):
            grad, loss_k, out = self.gradient(model, x_cur, y, loss_target, first=first and k == 0, loss=loss)
            update_best(x_cur, loss_k, out)
            improved = loss_k > f_max
            x_max[improved], grad_max[improved], f_max[improved] = x_cur[improved], grad[improved], loss_k[improved]
            if loss_prev is not None:
                increases += (loss_k > loss_prev).to(x.dtype)
            loss_prev = loss_k.clone()
            if k == 0:
                f_max_last_mark = f_max.clone()
            if k in marks:
                too_few = increases < self.rho * (k - last_mark)
                stalled = ~halved_last_mark & (f_max <= f_max_last_mark)
                halve = too_few | stalled
                eta = torch.where(halve, eta / 2, eta)
                # Restart the halved examples from their best point, without momentum.
                x_cur, x_prev = x_cur.clone(), x_prev.clone()
                x_cur[halve], x_prev[halve], grad = x_max[halve], x_max[halve], torch.where(
                    _view(halve, grad), grad_max, grad)
                loss_prev[halve] = f_max[halve]
                halved_last_mark, f_max_last_mark = halve, f_max.clone()
                increases.zero_()
                last_mark = k
            z = clip_to_threat(x_cur + _view(eta, x) * normalized_gradient(grad, self.norm), x, self.norm, self.eps)
            if k == 0:
                x_next = z
            else:
                x_next = clip_to_threat(x_cur + MOMENTUM * (z - x_cur) + (1 - MOMENTUM) * (x_cur - x_prev),
                                        x, self.norm, self.eps)
            x_prev, x_cur = x_cur, x_next
        with torch.no_grad():
            out = model(x_cur)
            update_best(x_cur, self.task.loss(out, y, loss or self.loss, loss_target), out)

    def describe(self) -> dict:
        return {**super().describe(), "steps": self.steps, "restarts": self.restarts, "rho": self.rho}


class APGDT(APGD):
    """AutoAttack's APGD-T: untargeted goal (misclassification) reached by targeted-DLR APGD runs.

    For each of the ``target_classes`` highest-scoring non-true classes of the clean output (capped at
    ``K - 1``), in turn, APGD with the targeted DLR loss is run towards that class on the examples not
    yet misclassified; per example the strongest point over all targets is kept (misclassified first,
    then highest untargeted DLR loss). Classification with >= 4 classes only.
    """

    name = "apgd-t"

    def __init__(self, *, norm: Norm = "linf", eps: float = 8 / 255, steps: int = 100, target_classes: int = 9,
                 rho: float = 0.75, task: Task | None = None, seed: int = 0, gradient_check: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, steps=steps, restarts=1, loss="dlr", targeted=False, rho=rho,
                         task=task, seed=seed, gradient_check=gradient_check)
        if target_classes < 1:
            raise AttackError(f"target_classes must be >= 1, got {target_classes}")
        self.target_classes = int(target_classes)

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        with torch.no_grad():
            clean = model(x)
        k = clean.shape[1]
        if k < 4:
            raise AttackError(f"APGD-T uses the targeted DLR loss, which needs at least 4 classes; the model has "
                              f"{k}: use APGD(loss='ce')")
        n = x.shape[0]
        best = Best.start(x)
        keep_stronger(best, x, dlr_loss(clean, y), self.task.success(clean, y))
        others = clean.clone()
        others.scatter_(1, y[:, None], -math.inf)
        order = others.argsort(dim=1, descending=True)
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        grads = torch.zeros(n, dtype=torch.long, device=x.device)
        for i in range(min(self.target_classes, k - 1)):
            todo = (~best.success).nonzero().flatten()
            if todo.numel() == 0:
                break
            sub = Best(best.adv[todo].clone(), best.loss[todo].clone(), best.success[todo].clone())
            self._ascend(model, x[todo], y[todo], order[todo, i], None, generator, sub, first=i == 0,
                         loss="dlr", rank=lambda out, yy=y[todo]: dlr_loss(out, yy))
            best.adv[todo], best.loss[todo], best.success[todo] = sub.adv, sub.loss, sub.success
            queries[todo] += self.steps + 1
            grads[todo] += self.steps
        return AttackResult(best.adv, best.success, queries, grads, {"loss": best.loss})

    def describe(self) -> dict:
        d = super().describe()
        d.pop("restarts", None)
        return {**d, "target_classes": self.target_classes}
