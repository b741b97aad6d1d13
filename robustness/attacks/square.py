"""The L-inf Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020): random search, no gradients.

Start from vertical stripes (each column of each channel at ``x +- eps``, random signs), then for each
query draw one square window of side ``s = round(sqrt(p * H * W))`` (at least 1, at most ``H - 1``) at
a random position and set the perturbation inside it to ``+-eps`` per channel (random signs, drawn
again while the window already holds those values); the candidate replaces the current point only when it
lowers the margin ``z_y - max_{j != y} z_j`` (or raises the task loss with ``loss="ce"``). The
fraction ``p`` starts at ``p_init`` and is halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
8000 of 10,000 queries (the schedule rescaled to ``queries``). An example stops being queried once
the attack succeeds on it; ``AttackResult.queries`` records the forward passes spent per example.

Needing no gradients, it exposes gradient masking: a defence that holds against PGD but not against
Square masks its gradients rather than being robust.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from threedb.robustness.attacks.base import (Attack, AttackError, AttackResult, Best, Classification, Model,
                                             Task, draw, keep_stronger)

SquareLoss = Literal["margin", "ce"]
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, query: int, queries: int) -> float:
    """The paper's ``p`` at ``query`` of ``queries``: ``p_init`` halved at each of its points of 10,000."""
    scaled = int(query / queries * 10000)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per example: negative exactly when misclassified (ties aside)."""
    others = logits.clone()
    others.scatter_(1, y[:, None], -math.inf)
    return logits.gather(1, y[:, None])[:, 0] - others.max(1).values


class Square(Attack):
    """The L-inf Square Attack: ``queries`` forward passes per restart at most, ``restarts`` random
    stripe initialisations (each only on the examples not yet broken), ``loss="margin"``
    (classification) or ``"ce"`` (any task, e.g. segmentation). Untargeted. ``extra["loss"]`` holds
    the maximised objective (``-margin`` or the task loss) at the returned point.
    """

    name = "square"
    uses_gradients = False

    def __init__(self, *, eps: float = 8 / 255, queries: int = 1000, p_init: float = 0.8, restarts: int = 1,
                 loss: SquareLoss = "margin", task: Task | None = None, seed: int = 0) -> None:
        super().__init__(norm="linf", eps=eps, task=task, loss=loss, targeted=False, seed=seed)
        if queries < 1 or restarts < 1:
            raise AttackError(f"queries and restarts must be >= 1 (got {queries}, {restarts})")
        if not 0 < p_init <= 1:
            raise AttackError(f"p_init must be in (0, 1], got {p_init}")
        if loss not in ("margin", "ce"):
            raise AttackError(f"unknown loss {loss!r} for Square: use margin or ce")
        if loss == "margin" and not isinstance(self.task, Classification):
            raise AttackError(f"the margin loss is for classification (task {self.task.name}): use loss ce")
        self.queries, self.p_init, self.restarts = int(queries), float(p_init), int(restarts)

    def _objective(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -margin(out, y) if self.loss == "margin" else self.task.loss(out, y, "ce")

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        n = x.shape[0]
        best = Best.start(x)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        with torch.no_grad():
            for _ in range(self.restarts):
                todo = (~best.success).nonzero().flatten()
                if todo.numel() == 0:
                    break
                adv, obj, success = self._search(model, x[todo], y[todo], generator, used, todo)
                sub = Best(best.adv[todo].clone(), best.loss[todo].clone(), best.success[todo].clone())
                keep_stronger(sub, adv, obj, success)
                best.adv[todo], best.loss[todo], best.success[todo] = sub.adv, sub.loss, sub.success
        return AttackResult(best.adv, best.success, used, torch.zeros_like(used), {"loss": best.loss})

    def _search(self, model: Model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                used: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One restart on a sub-batch; adds the queries spent to ``used[index]``."""
        n, c, h, w = x.shape
        dev, eps = x.device, self.eps

        def signs(*shape: int) -> torch.Tensor:
            return draw(torch.randint, 0, 2, shape, generator=generator, like=x).to(x.dtype) * 2 - 1

        delta = eps * signs(n, c, 1, w).expand(n, c, h, w).contiguous()
        adv = (x + delta).clamp(0, 1)
        out = model(adv)
        obj, success = self._objective(out, y), self.task.success(out, y)
        used[index] += 1
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        for q in range(1, self.queries):
            active = (~success).nonzero().flatten()
            if active.numel() == 0:
                break
            m = active.numel()
            p = square_fraction(self.p_init, q, self.queries)
            side = max(min(int(round(math.sqrt(p * h * w))), h - 1, w - 1), 1)
            r = draw(torch.randint, 0, h - side + 1, (m,), generator=generator, like=x)
            s = draw(torch.randint, 0, w - side + 1, (m,), generator=generator, like=x)
            window = (((rows[None] >= r[:, None]) & (rows[None] < r[:, None] + side))[:, :, None]
                      & ((cols[None] >= s[:, None]) & (cols[None] < s[:, None] + side))[:, None, :])[:, None]
            current = delta[active]
            new_val = eps * signs(m, c, 1, 1)
            # Redraw the signs of windows that would keep their current values (a wasted query).
            for _ in range(10):
                same = (torch.where(window, current - new_val, 0.0) == 0).flatten(1).all(1)
                if not bool(same.any()):
                    break
                new_val[same] = eps * signs(int(same.sum()), c, 1, 1)
            cand_delta = torch.where(window, new_val, current)
            cand = (x[active] + cand_delta).clamp(0, 1)
            cand_out = model(cand)
            cand_obj = self._objective(cand_out, y[active])
            used[index[active]] += 1
            better = cand_obj > obj[active]
            take = active[better]
            delta[take], adv[take], obj[take] = cand_delta[better], cand[better], cand_obj[better]
            success[take] = self.task.success(cand_out[better], y[take])
        return adv, obj, success

    def describe(self) -> dict:
        d = super().describe()
        d.pop("targeted", None)
        d.pop("gradient_check", None)
        return {**d, "queries": self.queries, "p_init": self.p_init, "restarts": self.restarts}
