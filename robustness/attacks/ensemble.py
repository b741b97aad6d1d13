"""Evaluation over several attacks with the per-example worst case (AutoAttack style).

An example counts as robust only if **every** attack failed on it: its worst score is the minimum of
the task's score on the clean input and on each attack's adversarial input. Randomized models are
evaluated as they are called (one draw per call); wrap them in :class:`~.wrappers.EOT` to evaluate an
average instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

from threedb.robustness.attacks.base import (Attack, AttackError, AttackResult, Classification, Model, Task,
                                             check_images, eval_mode, perturbation_norm)


@dataclass
class EnsembleResult:
    """What :func:`evaluate_ensemble` returns (``N`` examples).

    ``clean_score``/``clean_output``: the task's score and the model's output on the clean inputs;
    ``scores[name]``: per example the score on that attack's adversarial input (NaN where the attack
    was not run, with ``cascade``); ``results[name]``: the attack's :class:`AttackResult` over the
    examples it was run on (``attacked[name]``, a bool mask of ``N``); ``norms[name]``: the
    perturbation norms of ``results[name].adv`` in the attack's norm; ``worst_score``: per example
    the minimum over clean and every attack; ``worst_attack``: the name giving it (``"clean"`` when the
    clean input is already the worst, the earliest attack on ties); ``worst_adv``: the input giving it;
    ``clean_correct``: the clean input does not already meet the untargeted goal (e.g. correctly
    classified).
    """

    clean_score: torch.Tensor
    clean_output: torch.Tensor
    scores: dict[str, torch.Tensor]
    results: dict[str, AttackResult]
    worst_score: torch.Tensor
    worst_attack: list[str]
    worst_adv: torch.Tensor
    attacked: dict[str, torch.Tensor] = field(default_factory=dict)
    norms: dict[str, torch.Tensor] = field(default_factory=dict)
    clean_correct: Optional[torch.Tensor] = None


def evaluate_ensemble(model: Model, x: torch.Tensor, y: torch.Tensor, attacks: Mapping[str, Attack], *,
                      task: Task | None = None, cascade: bool = False) -> EnsembleResult:
    """Run every attack of ``attacks`` (in order) on ``(x, y)`` and take the per-example worst case.

    ``task`` (default :class:`Classification`) scores the outputs. ``cascade=True`` runs each attack
    only on the examples still robust after the clean input and the previous attacks (cheaper; the
    per-attack figures are then over those examples only); the worst case is the same as without
    cascade for deterministic attacks that never lose a success.
    """
    check_images(x)
    if not attacks:
        raise AttackError("evaluate_ensemble needs at least one attack")
    for name, attack in attacks.items():
        if name in ("clean", "worst"):
            raise AttackError(f"attack name {name!r} is reserved (clean input / worst case): rename that attack")
        if attack.targeted:
            raise AttackError(f"attack {name!r} is targeted; evaluate_ensemble measures untargeted robustness "
                              "(use APGDT for targeted runs with an untargeted goal)")
    task = task or Classification()
    n = x.shape[0]
    with eval_mode(model), torch.no_grad():
        clean_output = model(x)
    clean_score = task.score(clean_output, y).float()
    clean_correct = ~task.success(clean_output, y)
    worst_score = clean_score.clone()
    worst_adv = x.detach().clone()
    worst_index = torch.zeros(n, dtype=torch.long, device=x.device)
    robust = clean_correct.clone()
    scores: dict[str, torch.Tensor] = {}
    results: dict[str, AttackResult] = {}
    attacked: dict[str, torch.Tensor] = {}
    norms: dict[str, torch.Tensor] = {}
    for i, (name, attack) in enumerate(attacks.items(), start=1):
        mask = robust.clone() if cascade else torch.ones(n, dtype=torch.bool, device=x.device)
        index = mask.nonzero().flatten()
        score = torch.full((n,), math.nan, device=x.device)
        if index.numel():
            result = attack(model, x[index], y[index])
            with eval_mode(model), torch.no_grad():
                score[index] = task.score(model(result.adv), y[index]).float()
            norms[name] = perturbation_norm(result.adv - x[index], attack.norm)
            robust[index] &= ~result.success
        else:
            empty = x[:0]
            zeros = torch.zeros(0, dtype=torch.long, device=x.device)
            result = AttackResult(empty.clone(), torch.zeros(0, dtype=torch.bool, device=x.device), zeros, zeros)
            norms[name] = torch.zeros(0, device=x.device)
        lower = score < worst_score  # NaN (not attacked) compares False
        worst_score[lower], worst_index[lower] = score[lower], i
        if lower.any():
            adv_full = torch.zeros_like(x)
            adv_full[index] = result.adv
            worst_adv[lower] = adv_full[lower]
        scores[name], results[name], attacked[name] = score, result, mask
    names = ["clean", *attacks.keys()]
    return EnsembleResult(clean_score, clean_output, scores, results, worst_score,
                          [names[j] for j in worst_index.tolist()], worst_adv, attacked, norms, clean_correct)


def _mean(v: torch.Tensor) -> Optional[float]:
    return float(v.float().mean()) if v.numel() else None


def summarize(result: EnsembleResult) -> dict:
    """Headline figures of an :class:`EnsembleResult` (``None`` where a figure is over no example).

    ``clean_accuracy``: mean clean score; ``robust_accuracy``: mean score per attack (over the
    examples it was run on) and ``"worst"`` (the per-example worst case over all); ``success_rate``:
    per attack, the fraction of its clean-correct examples it broke; ``mean_perturbation_norm``: per
    attack, over the clean-correct examples it broke; ``mean_queries``/``mean_gradients``: per attack, over the
    examples it was run on; ``worst_attack_counts``: how often each name gave the worst case.
    """
    out: dict = {"examples": int(result.clean_score.numel()),
                 "clean_accuracy": _mean(result.clean_score),
                 "robust_accuracy": {}, "success_rate": {}, "mean_perturbation_norm": {},
                 "mean_queries": {}, "mean_gradients": {}}
    for name, res in result.results.items():
        mask = result.attacked.get(name, torch.ones_like(result.clean_score, dtype=torch.bool))
        out["robust_accuracy"][name] = _mean(result.scores[name][mask])
        correct = (result.clean_correct[mask] if result.clean_correct is not None
                   else torch.ones(res.success.shape, dtype=torch.bool, device=res.success.device))
        out["success_rate"][name] = _mean(res.success[correct])
        norms = result.norms.get(name)
        out["mean_perturbation_norm"][name] = _mean(norms[res.success & correct]) if norms is not None else None
        out["mean_queries"][name] = _mean(res.queries)
        out["mean_gradients"][name] = _mean(res.gradients)
    out["robust_accuracy"]["worst"] = _mean(result.worst_score)
    counts: dict[str, int] = {}
    for name in result.worst_attack:
        counts[name] = counts.get(name, 0) + 1
    out["worst_attack_counts"] = counts
    return out
