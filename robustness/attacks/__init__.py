"""Adversarial attacks on images in [0, 1] (normalisation inside the model); see :mod:`.base` for the
conventions every attack keeps (ball and box, eval mode, seeded randomness, tasks)."""
from threedb.robustness.attacks.base import (Attack, AttackError, AttackResult, Classification, GradientError,
                                             Segmentation, Task, clip_to_threat, dlr_loss, perturbation_norm,
                                             project)
from threedb.robustness.attacks.pgd import FGSM, PGD

__all__ = ["Attack", "AttackError", "AttackResult", "Classification", "FGSM", "GradientError", "PGD",
           "Segmentation", "Task", "clip_to_threat", "dlr_loss", "perturbation_norm", "project"]
