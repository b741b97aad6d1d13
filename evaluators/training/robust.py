"""Robustness measurements of ``threedb train``: the per-epoch PGD check (early stopping against
catastrophic overfitting) and the model card's final robust evaluation (PGD with restarts, and the
per-example worst case over PGD, APGD-CE, APGD-T and Square; for segmentation also object removal, a
targeted PGD towards the all-background mask, with the worst case taken by the lowest F-measure).

Both attack the pixel-space model (:class:`threedb.robustness.models.Normalized`) in ``eval()`` mode
with seeded attacks, so they are deterministic and do not touch the training randomness.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from threedb.robustness.attacks import APGD, APGDT, PGD, Classification, Segmentation, Square, Task
from threedb.robustness.attacks import EnsembleResult, evaluate_ensemble, object_removal, summarize
from threedb.robustness.attacks.base import eval_mode
from threedb.robustness.metrics import f_measure, segmentation_scores


def make_task(kind: str) -> Task:
    return Segmentation() if kind == "segmentation" else Classification()


def spaced_indices(total: int, count: int | None) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all when ``count`` is None or larger)."""
    if count is None or count >= total:
        return list(range(total))
    return torch.linspace(0, total - 1, count).round().long().unique().tolist()


def stack(data: Any, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The items ``indices`` of a (non-augmented) dataset as one batch."""
    items = [data[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def _batches(x: torch.Tensor, y: torch.Tensor, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i:i + size], y[i:i + size]


def pgd_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task, *, eps: float, norm: str,
              steps: int, step_size: float | None, restarts: int = 1, seed: int = 0,
              batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clean score, PGD score)`` per example (accuracy for classifiers, pixel accuracy for segmenters)."""
    attack = PGD(eps=eps, norm=norm, steps=steps, step_size=step_size, restarts=restarts, task=task, seed=seed)
    clean, robust = [], []
    with eval_mode(model):
        for xb, yb in _batches(x, y, batch_size):
            adv = attack(model, xb, yb).adv
            with torch.no_grad():
                clean.append(task.score(model(xb), yb).float())
                robust.append(task.score(model(adv), yb).float())
    return torch.cat(clean), torch.cat(robust)


def _seg_means(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
               batch_size: int) -> dict[str, float]:
    preds = []
    with torch.no_grad():
        for xb, _ in _batches(x, y, batch_size):
            preds.append(model(xb).argmax(1))
    scores = segmentation_scores(torch.cat(preds).cpu(), y.cpu(), num_classes)
    return {name: float(v.float().mean()) for name, v in scores.items()}


def removal_attack(eps: float, cfg: Any, task: Task) -> Any:
    """Object removal for the card: PGD with the card's steps and restarts, step eps/2 under a cosine
    decay, targeted at the all-background mask, untargeted goal."""
    return object_removal(PGD(eps=eps, norm=cfg.norm, steps=cfg.steps, restarts=cfg.restarts, step_size=eps / 2,
                              schedule="cosine", targeted=True, task=task, seed=cfg.seed),
                          name=f"pgd-removal-{cfg.steps}x{cfg.restarts}")


def worst_by_f_measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       result: EnsembleResult) -> tuple[torch.Tensor, list[str], dict[str, torch.Tensor]]:
    """Per example the input (clean, then each attack in order; the earliest on ties) with the lowest
    foreground F-measure: ``(worst inputs, the names giving them, F per input name)``."""
    names = ["clean", *result.results]
    inputs = [x, *(r.adv for r in result.results.values())]
    with torch.no_grad():
        f = torch.stack([f_measure(model(v).argmax(1), y) for v in inputs])      # (inputs, N)
    pick = f.argmin(0)                                                            # first minimum on ties
    stacked = torch.stack(inputs)
    worst = stacked[pick, torch.arange(x.shape[0], device=x.device)]
    return worst, [names[i] for i in pick.tolist()], dict(zip(names, f))


def robust_evaluation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, task_kind: str, num_classes: int,
                      cfg: Any, eps: float) -> dict[str, Any]:
    """The card's robustness figures on ``(x, y)`` (device tensors, images in [0, 1]).

    Classification: per example the worst case is the lowest accuracy over clean and every attack.
    Segmentation: object removal joins the attacks, and per example the worst case is the input with
    the lowest F-measure (``worst`` and ``worst_scores`` are the scores of that input).
    """
    task = make_task(task_kind)
    segmentation = task_kind == "segmentation"
    with eval_mode(model):
        pgd_name = f"pgd-{cfg.steps}x{cfg.restarts}"
        attacks: dict[str, Any] = {pgd_name: PGD(eps=eps, norm=cfg.norm, steps=cfg.steps, restarts=cfg.restarts,
                                                 task=task, seed=cfg.seed)}
        if segmentation:
            removal = removal_attack(eps, cfg, task)
            attacks[removal.name] = removal
        if cfg.ensemble:
            attacks["apgd-ce"] = APGD(eps=eps, norm=cfg.norm, steps=cfg.apgd_steps, loss="ce", task=task,
                                      seed=cfg.seed)
            if task_kind == "classification" and num_classes >= 4:
                attacks["apgd-t"] = APGDT(eps=eps, norm=cfg.norm, steps=cfg.apgd_steps,
                                          target_classes=min(9, num_classes - 1), task=task, seed=cfg.seed)
            if cfg.norm == "linf":
                attacks["square"] = Square(eps=eps, queries=cfg.square_queries, task=task, seed=cfg.seed,
                                           loss="margin" if task_kind == "classification" else "ce")
        per_batch, by_f = [], []
        for xb, yb in _batches(x, y, cfg.batch_size):
            per_batch.append(evaluate_ensemble(model, xb, yb, attacks, task=task))
            if segmentation:
                by_f.append(worst_by_f_measure(model, xb, yb, per_batch[-1]))
    clean = torch.cat([r.clean_score for r in per_batch])
    scores = {name: torch.cat([r.scores[name] for r in per_batch]) for name in attacks}
    counts: dict[str, int] = {}
    if segmentation:
        worst_adv = torch.cat([w for w, _, _ in by_f])
        picked = [name for _, names, _ in by_f for name in names]
        for name in picked:
            counts[name] = counts.get(name, 0) + 1
        # the pixel accuracy of each example's lowest-F input
        worst = torch.stack([(clean if name == "clean" else scores[name])[i] for i, name in enumerate(picked)])
    else:
        worst = torch.cat([r.worst_score for r in per_batch])
        for r in per_batch:
            for name, c in summarize(r)["worst_attack_counts"].items():
                counts[name] = counts.get(name, 0) + c
    out: dict[str, Any] = {
        "eps": eps, "norm": cfg.norm, "examples": int(x.shape[0]),
        "pgd": {"steps": cfg.steps, "restarts": cfg.restarts, "step_size": attacks[pgd_name].step_size},
        "attacks": [*attacks], "score": "accuracy" if task_kind == "classification" else "pixel_accuracy",
        "clean": float(clean.mean()), "pgd_score": float(scores[pgd_name].mean()),
        "per_attack": {name: float(s.mean()) for name, s in scores.items()},
        "worst": float(worst.mean()), "worst_attack_counts": counts,
    }
    if segmentation:
        f_per_input = {name: torch.cat([f[name] for _, _, f in by_f]) for name in ["clean", *attacks]}
        out["worst_by"] = "f_measure"
        out["per_attack_f_measure"] = {name: float(f_per_input[name].mean()) for name in attacks}
        out["removal"] = {"name": removal.name, "steps": cfg.steps, "restarts": cfg.restarts,
                          "step_size": eps / 2, "schedule": "cosine", "target": "all background"}
        with eval_mode(model):
            out["clean_scores"] = _seg_means(model, x, y, num_classes, cfg.batch_size)
            out["worst_scores"] = _seg_means(model, worst_adv, y, num_classes, cfg.batch_size)
    return out
