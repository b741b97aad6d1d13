"""Randomized smoothing: certified robustness from Monte Carlo samples of a base model under noise.

* :mod:`.statistics`: confidence bounds, radii, binomial tests, family-wise error control;
* :mod:`.sampling`: SAMPLE, batched noise on the model's device, deterministic per example;
* :mod:`.classification`: Cohen et al.'s CERTIFY and PREDICT;
* :mod:`.segmentation`: SEGCERTIFY (Holm / Bonferroni / k-FWER) and its baselines;
* :mod:`.equivalence`: probabilistic local equivalence for any function and score.

Conventions are those of :mod:`threedb.robustness.attacks.base` (images in ``[0, 1]``, normalisation
inside the model, eval mode), except that noisy images are not clamped (see :mod:`.sampling`).
"""
from .classification import ABSTAIN, Certificate, certified_accuracy, certify, certify_counts, predict, predict_counts
from .equivalence import EquivalenceCertificate, certify_equivalence, robustness_score
from .sampling import class_counts, example_seed, generator, pixel_counts
from .segmentation import (SEGMENTATION_METHODS, SegmentationCertificate, certified_scores, segcertify,
                           segcertify_counts)
from .statistics import SmoothingError, fwer_reject, lower_confidence_bound, radius

__all__ = ["ABSTAIN", "Certificate", "EquivalenceCertificate", "SEGMENTATION_METHODS", "SegmentationCertificate",
           "SmoothingError", "certified_accuracy", "certified_scores", "certify", "certify_counts",
           "certify_equivalence", "class_counts", "example_seed", "fwer_reject", "generator",
           "lower_confidence_bound", "pixel_counts", "predict", "predict_counts", "radius", "robustness_score",
           "segcertify", "segcertify_counts"]
