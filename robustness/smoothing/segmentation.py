"""Certified segmentation by randomized smoothing (Fischer, Baader & Vechev 2021, "SegCertify").

Per pixel ``i`` the thresholded smoothed model ``f_i^tau(x) = c`` if ``P(f_i(x + e) = c) > tau``,
else abstain. SEGCERTIFY tests ``H0: p_i <= tau`` for every pixel with a one-sided binomial test and
controls the family-wise error over all pixels (Holm by default, Bonferroni, or a k-FWER budget);
the pixels whose hypothesis is rejected are certified **together** for the L2 radius
``sigma * PhiInv(tau)``, the others abstain. With probability at least ``1 - alpha`` no certified pixel
is wrong about ``f^tau`` (with the k-FWER budget: fewer than ``k`` are).

Two baselines the paper compares against:

* :func:`certify_pixels_bonferroni`: every pixel certified on its own (Clopper-Pearson at
  ``alpha / N``), the mask's radius being the smallest certified pixel radius;
* :func:`certify_whole_mask`: the whole mask as one class of CERTIFY (the most frequent mask of the
  selection samples, bounded by how often the estimation samples reproduce it exactly).

Every certified labelling uses :data:`ABSTAIN` (``-1``) for abstained pixels;
:func:`certified_scores` counts them as wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy import stats

from ..metrics import mean_iou
from .classification import ABSTAIN
from .sampling import Model, generator, pixel_counts
from .statistics import (FWERMethod, SmoothingError, check_alpha, check_samples, check_sigma, fwer_reject,
                         lower_confidence_bound, radius, upper_tail_pvalues)

SEGMENTATION_METHODS: tuple[str, ...] = ("holm", "bonferroni", "kfwer", "pixel_bonferroni", "whole_mask")


@dataclass(frozen=True)
class SegmentationCertificate:
    """A certified labelling: ``labels`` (``HxW`` int64, :data:`ABSTAIN` where abstained), the radius
    they hold for (0 when every pixel abstains), and the method that produced them."""

    labels: torch.Tensor
    radius: float
    method: str

    @property
    def abstain_rate(self) -> float:
        """Share of pixels that abstained."""
        return float((self.labels == ABSTAIN).to(torch.float64).mean())


def _check_counts(counts0: torch.Tensor, counts: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int]:
    c0, c = np.asarray(counts0.cpu()), np.asarray(counts.cpu())
    if c0.ndim != 3 or c0.shape != c.shape:
        raise SmoothingError(f"pixel counts must both be KxHxW of one shape, got {c0.shape} and {c.shape}")
    n = int(c[:, 0, 0].sum())
    if n < 1 or int(c0[:, 0, 0].sum()) < 1:
        raise SmoothingError("need at least one selection and one estimation sample")
    return c0, c, n


def _check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.5 <= float(tau) < 1.0:
        raise SmoothingError(f"tau must be in [0.5, 1) (the per-pixel majority threshold), got {tau!r}")
    return float(tau)


def segcertify_counts(counts0: torch.Tensor, counts: torch.Tensor, *, sigma: float, tau: float = 0.75,
                      alpha: float = 1e-4, method: FWERMethod = "holm", k: int = 1
                      ) -> SegmentationCertificate:
    """SEGCERTIFY's statistics on per-pixel counts (``KxHxW`` each, selection and estimation)."""
    sigma, alpha, tau = check_sigma(sigma), check_alpha(alpha), _check_tau(tau)
    c0, c, n = _check_counts(counts0, counts)
    candidate = c0.argmax(0)
    hits = np.take_along_axis(c, candidate[None], 0)[0]
    reject = fwer_reject(upper_tail_pvalues(hits.ravel(), n, tau), alpha, method, k).reshape(hits.shape)
    labels = np.where(reject, candidate, ABSTAIN)
    certified_radius = radius(tau, sigma) if reject.any() else 0.0
    return SegmentationCertificate(torch.from_numpy(labels.astype(np.int64)), certified_radius,
                                   method if method != "kfwer" else f"kfwer(k={k})")


def certify_pixels_bonferroni(counts0: torch.Tensor, counts: torch.Tensor, *, sigma: float,
                              alpha: float = 1e-4) -> SegmentationCertificate:
    """Baseline: Cohen's CERTIFY per pixel at level ``alpha / N`` (Bonferroni over the ``N`` pixels).

    Each pixel whose Clopper-Pearson bound exceeds 1/2 is certified; the labelling as a whole holds
    for the smallest of their radii.
    """
    sigma, alpha = check_sigma(sigma), check_alpha(alpha)
    c0, c, n = _check_counts(counts0, counts)
    candidate = c0.argmax(0)
    hits = np.take_along_axis(c, candidate[None], 0)[0].astype(np.float64)
    level = alpha / hits.size
    # One-sided Clopper-Pearson lower bounds, vectorised (Beta(level; k, n - k + 1); 0 when k = 0).
    lower = np.where(hits > 0, stats.beta.ppf(level, np.maximum(hits, 1), n - hits + 1), 0.0)
    certified = lower > 0.5
    labels = np.where(certified, candidate, ABSTAIN)
    certified_radius = radius(float(lower[certified].min()), sigma) if certified.any() else 0.0
    return SegmentationCertificate(torch.from_numpy(labels.astype(np.int64)), certified_radius,
                                   "pixel_bonferroni")


def certify_whole_mask(masks0: torch.Tensor, matches: int, n: int, *, sigma: float, alpha: float = 1e-4
                       ) -> SegmentationCertificate:
    """Baseline: the whole mask as one CERTIFY class.

    ``masks0`` are the selection samples' masks (``n0 x H x W``); their most frequent mask is the
    candidate and ``matches`` says how many of the ``n`` estimation masks equal it exactly (see
    :func:`mode_mask`). Either every pixel is certified or none is.
    """
    sigma, alpha = check_sigma(sigma), check_alpha(alpha)
    if not 0 <= matches <= n:
        raise SmoothingError(f"matches must lie in [0, n], got {matches} of {n}")
    # The candidate "class" is the mode mask itself (never "any other mask"), bounded like CERTIFY's cA.
    mode, _ = mode_mask(masks0)
    p_lower = lower_confidence_bound(matches, n, alpha)
    if p_lower > 0.5:
        return SegmentationCertificate(mode.to(torch.int64), radius(p_lower, sigma), "whole_mask")
    return SegmentationCertificate(torch.full(mode.shape, ABSTAIN, dtype=torch.int64), 0.0, "whole_mask")


def mode_mask(masks: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The most frequent mask among ``masks`` (``m x H x W``) and its count (ties: the first seen)."""
    if masks.dim() != 3 or masks.shape[0] < 1:
        raise SmoothingError(f"masks must be m x H x W with m >= 1, got {tuple(masks.shape)}")
    unique, inverse, count = torch.unique(masks.flatten(1), dim=0, return_inverse=True, return_counts=True)
    best = int(count.max())
    # the first sample whose mask has the top count (stable under ties, unlike unique's sorted order)
    first = int(torch.nonzero(count[inverse] == best)[0])
    return masks[first].clone(), best


def segcertify(model: Model, x: torch.Tensor, *, sigma: float = 0.25, tau: float = 0.75, n0: int = 100,
               n: int = 1000, alpha: float = 1e-4, methods: tuple[str, ...] = ("holm",), k: int = 1,
               batch_size: int = 100, seed: int = 0, gen: Optional[torch.Generator] = None
               ) -> dict[str, SegmentationCertificate]:
    """Certify the segmentation model ``model`` at image ``x`` with each of ``methods``.

    One selection pass (``n0``) and one estimation pass (``n``) serve every method, so they are
    compared on the same samples. ``methods`` are names from :data:`SEGMENTATION_METHODS`.
    """
    sigma, alpha, tau = check_sigma(sigma), check_alpha(alpha), _check_tau(tau)
    check_samples(n0, n)
    unknown = [m for m in methods if m not in SEGMENTATION_METHODS]
    if unknown or not methods:
        raise SmoothingError(f"unknown segmentation certification method(s) {unknown or methods!r}: "
                             f"use {', '.join(SEGMENTATION_METHODS)}")
    gen = gen if gen is not None else generator(x.device, seed)
    whole = "whole_mask" in methods
    counts0, masks0, _ = pixel_counts(model, x, sigma=sigma, num=n0, batch_size=batch_size, gen=gen,
                                      keep_masks=whole)
    reference = mode_mask(masks0)[0] if whole else None
    counts, _, matches = pixel_counts(model, x, sigma=sigma, num=n, batch_size=batch_size, gen=gen,
                                      num_classes=int(counts0.shape[0]), reference=reference)
    out: dict[str, SegmentationCertificate] = {}
    for method in methods:
        if method == "pixel_bonferroni":
            out[method] = certify_pixels_bonferroni(counts0, counts, sigma=sigma, alpha=alpha)
        elif method == "whole_mask":
            out[method] = certify_whole_mask(masks0, matches, n, sigma=sigma, alpha=alpha)
        else:
            out[method] = segcertify_counts(counts0, counts, sigma=sigma, tau=tau, alpha=alpha,
                                            method=method, k=k)  # type: ignore[arg-type]
    return out


def certified_scores(labels: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                     background: int = 0) -> dict[str, float]:
    """Certified pixel accuracy, mIoU and abstain rate of one certified labelling against its mask.

    Abstained pixels count as wrong: they lower pixel accuracy, and in mIoU they are missed pixels
    of their true class (false negatives) without being a false positive of any class.
    """
    if labels.shape != target.shape or labels.dim() != 2:
        raise SmoothingError(f"labels {tuple(labels.shape)} and target {tuple(target.shape)} must both be HxW")
    labels, target = labels.to(torch.int64).cpu(), target.to(torch.int64).cpu()
    abstained = labels == ABSTAIN
    # mIoU averages over foreground classes only, so an abstained pixel relabelled as background is
    # exactly a false negative of its true class and a false positive of none.
    pred = torch.where(abstained, torch.full_like(labels, background), labels)
    iou = float(mean_iou(pred[None], target[None], num_classes, background=background)[0])
    return {"pixel_accuracy": float(((labels == target) & ~abstained).to(torch.float64).mean()),
            "iou": iou,
            "abstain_rate": float(abstained.to(torch.float64).mean())}


__all__ = ["SEGMENTATION_METHODS", "SegmentationCertificate", "certified_scores", "certify_pixels_bonferroni",
           "certify_whole_mask", "mode_mask", "segcertify", "segcertify_counts"]
