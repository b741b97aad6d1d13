"""DeepFool (Moosavi-Dezfooli et al. 2016): a minimum-norm attack, L2 or L-inf, untargeted.

At each step the classifier is linearised at the current point; for each of the ``candidates`` classes ``k``
ranked highest on the clean input (other than the label ``y``), ``f_k = z_k - z_y`` and ``w_k = grad f_k``
give the distance ``|f_k| / ||w_k||_*`` to that linearised boundary (``*``: the dual norm, L1 for L-inf,
L2 for L2). The step goes to the closest one: ``(|f_l| + 1e-4) w_l / ||w_l||_2^2`` (L2) or
``(|f_l| + 1e-4) sign(w_l) / ||w_l||_1`` (L-inf). Steps accumulate into ``r``; the point is
``x + (1 + overshoot) r`` moved into the ``eps`` cap and the ``[0, 1]`` box. An example stops once it is
misclassified. The result is a *candidate direction*: the point is past the boundary by about the
overshoot; a line search from ``x`` (:mod:`threedb.robustness.framework.margin`) finds the boundary.

``eps`` caps the perturbation (the attack contract); ``eps=None`` means no cap beyond the box (L-inf: 1;
L2: unbounded).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from threedb.robustness.attacks.base import (Attack, AttackError, AttackResult, GradientError, Model, Norm,
                                             Task, clip_to_threat)


class DeepFool(Attack):
    """Minimum-norm DeepFool attack (see the module docstring); classification only, untargeted."""

    name = "deepfool"

    def __init__(self, *, norm: Norm = "l2", eps: float | None = None, steps: int = 50, overshoot: float = 0.02,
                 candidates: int = 10, task: Task | None = None, seed: int = 0) -> None:
        super().__init__(norm=norm, eps=1.0 if eps is None else eps, task=task, loss="ce", seed=seed)
        if eps is None and norm == "l2":
            self.eps = math.inf
        if steps < 1 or candidates < 1:
            raise AttackError(f"steps and candidates must be >= 1 (got {steps}, {candidates})")
        if not (isinstance(overshoot, (int, float)) and 0 <= overshoot < 1):
            raise AttackError(f"overshoot must be in [0, 1), got {overshoot!r}")
        self.steps, self.overshoot, self.candidates = int(steps), float(overshoot), int(candidates)

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        n = x.shape[0]
        with torch.no_grad():
            logits = model(x)
        k = logits.shape[1]
        if k < 2:
            raise AttackError("DeepFool needs at least 2 classes")
        ranked = logits.masked_fill(torch.nn.functional.one_hot(y, k).bool(), -math.inf).argsort(1, descending=True)
        others = ranked[:, :min(self.candidates, k - 1)]                         # N x C
        shape = (-1, *[1] * (x.ndim - 1))
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        active = logits.argmax(1) == y
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        grads = torch.zeros(n, dtype=torch.long, device=x.device)
        for _ in range(self.steps):
            if not bool(active.any()):
                break
            idx = active.nonzero().flatten()
            xa = x_adv[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                z = model(xa)
                z_y = z.gather(1, y[idx, None])
                f = z.gather(1, others[idx]) - z_y                                   # n' x C
                w = []
                for c in range(f.shape[1]):
                    (g,) = torch.autograd.grad(f[:, c].sum(), xa, retain_graph=c + 1 < f.shape[1],
                                               allow_unused=True)
                    if g is None or not bool(torch.isfinite(g).all()):
                        raise GradientError("the model's logits have no finite gradient with respect to its "
                                            "input; wrap it with threedb.robustness.attacks.BPDA")
                    w.append(g)
            w_all = torch.stack(w, 1)                                                # n' x C x ...
            f = f.detach()
            dual = w_all.flatten(2).abs().sum(2) if self.norm == "linf" else w_all.flatten(2).norm(dim=2)
            dist = f.abs() / dual.clamp_min(1e-12)
            best = dist.argmin(1)
            pick = torch.arange(idx.numel(), device=x.device)
            w_l, f_l, d_l = w_all[pick, best], f[pick, best].abs() + 1e-4, dual[pick, best].clamp_min(1e-12)
            if self.norm == "linf":
                step = (f_l / d_l).view(shape) * w_l.sign()
            else:
                step = (f_l / d_l ** 2).view(shape) * w_l
            r_total[idx] += step
            x_adv[idx] = clip_to_threat(x[idx] + (1 + self.overshoot) * r_total[idx], x[idx], self.norm, self.eps)
            with torch.no_grad():
                flipped = model(x_adv[idx]).argmax(1) != y[idx]
            queries[idx] += 2
            grads[idx] += f.shape[1]
            active[idx[flipped]] = False
        with torch.no_grad():
            out = model(x_adv)
        success = self.task.success(out, y)
        return AttackResult(x_adv.detach(), success, queries, grads, {"loss": self.task.loss(out, y)})

    def describe(self) -> dict:
        return {**super().describe(), "eps": None if math.isinf(self.eps) else self.eps, "steps": self.steps, "overshoot": self.overshoot,
                "candidates": self.candidates}
