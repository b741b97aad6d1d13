"""Adversarial attacks on images in [0, 1] (normalisation inside the model); see :mod:`.base` for the
conventions every attack keeps (ball and box, eval mode, seeded randomness, tasks).

Gradient attacks: :class:`FGSM`, :class:`PGD`, :class:`APGD`, :class:`APGDT`; gradient-free:
:class:`Square`; adaptive wrappers: :class:`BPDA` (non-differentiable defences) and :class:`EOT`
(randomized defences); targeted attacks run for an untargeted goal: :class:`TowardsTarget` and
:func:`object_removal` (segmentation: every pixel to background); worst case over attacks:
:func:`evaluate_ensemble` and :func:`summarize`.
"""
from threedb.robustness.attacks.apgd import APGD, APGDT
from threedb.robustness.attacks.base import (Attack, AttackError, AttackResult, Classification, GradientError,
                                             Segmentation, Task, clip_to_threat, dlr_loss, perturbation_norm,
                                             project)
from threedb.robustness.attacks.ensemble import EnsembleResult, evaluate_ensemble, summarize
from threedb.robustness.attacks.pgd import FGSM, PGD
from threedb.robustness.attacks.square import Square
from threedb.robustness.attacks.wrappers import BPDA, EOT, TowardsTarget, background_target, object_removal

__all__ = ["APGD", "APGDT", "Attack", "AttackError", "AttackResult", "BPDA", "Classification", "EOT",
           "EnsembleResult", "FGSM", "GradientError", "PGD", "Segmentation", "Square", "Task", "TowardsTarget",
           "background_target", "clip_to_threat", "dlr_loss", "evaluate_ensemble", "object_removal",
           "perturbation_norm", "project", "summarize"]
