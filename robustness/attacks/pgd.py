"""FGSM and projected gradient descent (Goodfellow et al. 2015; Madry et al. 2018).

PGD: from a random start in the ball (or ``x``), repeat
``x <- proj_{B(x, eps) n [0,1]^d}(x + alpha_t * dir(grad L))`` with ``dir = sign`` (L-inf) or
``g / ||g||_2`` (L2), projecting onto **both** the ball and the box. The strongest point seen on
any step of any restart is returned per example (successful first, then highest loss), so more
steps or restarts never weaken the attack.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from threedb.robustness.attacks.base import (Attack, AttackError, AttackResult, Best, Model, Norm, Task,
                                             clip_to_threat, keep_stronger, normalized_gradient,
                                             random_in_ball)

Schedule = Literal["constant", "cosine", "step"]


def step_size_at(alpha: float, t: int, steps: int, schedule: Schedule) -> float:
    """Step size of step ``t`` of ``steps``: constant; cosine decay to 0; or halved at 50% and 75%."""
    if schedule == "constant":
        return alpha
    if schedule == "cosine":
        return alpha * 0.5 * (1 + math.cos(math.pi * t / steps))
    if schedule == "step":
        return alpha * (0.5 ** ((t >= steps // 2) + (t >= (3 * steps) // 4)))
    raise AttackError(f"unknown step-size schedule {schedule!r}: use constant, cosine or step")


class FGSM(Attack):
    """One step of size ``eps`` along the gradient's sign (L-inf) or its direction (L2), then the box."""

    name = "fgsm"

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        grad, _, _ = self.gradient(model, x, y, target, first=True)
        adv = clip_to_threat(x + self.eps * normalized_gradient(grad, self.norm), x, self.norm, self.eps)
        with torch.no_grad():
            out = model(adv)
            success = self.task.success(out, y, target)
            loss = self.task.loss(out, y, self.loss, target)
        n = x.shape[0]
        ones = torch.ones(n, dtype=torch.long, device=x.device)
        return AttackResult(adv, success, 2 * ones, ones, {"loss": loss})


class PGD(Attack):
    """Projected gradient descent, L-inf or L2, untargeted or targeted.

    ``steps`` iterations of step size ``step_size`` (default ``2.5 * eps / steps``, Madry et al.'s
    rule) under ``schedule``; ``restarts`` independent random starts (``random_start=False`` starts
    the first restart at ``x``).
    """

    name = "pgd"

    def __init__(self, *, norm: Norm = "linf", eps: float = 8 / 255, steps: int = 10,
                 step_size: float | None = None, restarts: int = 1, random_start: bool = True,
                 schedule: Schedule = "constant", loss: str = "ce", targeted: bool = False,
                 task: Task | None = None, seed: int = 0, gradient_check: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, task=task, loss=loss, targeted=targeted, seed=seed,
                         gradient_check=gradient_check)
        if steps < 1 or restarts < 1:
            raise AttackError(f"steps and restarts must be >= 1 (got {steps}, {restarts})")
        step_size_at(1.0, 0, steps, schedule)  # validates the schedule name
        self.steps, self.restarts, self.random_start, self.schedule = steps, restarts, random_start, schedule
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / steps

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        best = Best.start(x)
        n = x.shape[0]
        for restart in range(self.restarts):
            start_random = self.random_start or restart > 0
            x_adv = random_in_ball(x, self.norm, self.eps, generator) if start_random else x.clone()
            for t in range(self.steps):
                grad, loss, out = self.gradient(model, x_adv, y, target, first=(restart == 0 and t == 0))
                keep_stronger(best, x_adv, loss, self.task.success(out, y, target))
                alpha = step_size_at(self.step_size, t, self.steps, self.schedule)
                x_adv = clip_to_threat(x_adv + alpha * normalized_gradient(grad, self.norm), x, self.norm, self.eps)
            with torch.no_grad():
                out = model(x_adv)
                keep_stronger(best, x_adv, self.task.loss(out, y, self.loss, target),
                              self.task.success(out, y, target))
        per_restart = self.steps + 1
        queries = torch.full((n,), self.restarts * per_restart, dtype=torch.long, device=x.device)
        grads = torch.full((n,), self.restarts * self.steps, dtype=torch.long, device=x.device)
        return AttackResult(best.adv, best.success, queries, grads, {"loss": best.loss})

    def describe(self) -> dict:
        return {**super().describe(), "steps": self.steps, "step_size": self.step_size,
                "restarts": self.restarts, "random_start": self.random_start, "schedule": self.schedule}
