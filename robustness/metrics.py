"""Segmentation scores per example, and the standard error of an accuracy.

All scores take label maps ``pred`` and ``target`` (integer tensors ``NxHxW`` with values in
``[0, num_classes)``) and return a float64 tensor of ``N`` scores in ``[0, 1]`` on the inputs' device.
Pixels labelled ``background`` (default 0) are background; every other label is a foreground class.

* :func:`pixel_accuracy`: share of pixels whose label matches.
* :func:`mean_iou`: mean intersection-over-union over the foreground classes present in the prediction
  or the target; 1 when both are all background.
* :func:`symmetric_best_dice`: SBD (Scharr et al.) over *segments* = the 8-connected regions of each
  foreground class (``scipy.ndimage.label`` per class, 3x3 structuring element). Two diagonal pixels of
  one class are one segment; a segment only matches segments of its own class. Both without segments:
  1; only one without: 0.
* :func:`f_measure`: F1 of foreground-vs-background pixels (class labels ignored); both all background: 1.
* :func:`segmentation_scores`: all four in one dict.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from scipy import ndimage

from threedb.robustness.attacks.base import AttackError

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _check(pred: torch.Tensor, target: torch.Tensor, num_classes: int, background: int) -> None:
    """Raise :class:`AttackError` naming what is wrong with the label maps."""
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise AttackError(f"segmentation scores: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise AttackError(f"segmentation scores: {name} must hold integer labels, got dtype {t.dtype} "
                              "(take logits.argmax(1) first)")
        if t.dim() != 3:
            raise AttackError(f"segmentation scores: {name} must be NxHxW, got shape {tuple(t.shape)}")
    if pred.shape != target.shape:
        raise AttackError(f"segmentation scores: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                          "differ in shape")
    if pred.device != target.device:
        raise AttackError(f"segmentation scores: pred on {pred.device}, target on {target.device}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise AttackError(f"segmentation scores: num_classes must be an int >= 2, got {num_classes!r}")
    if not 0 <= background < num_classes:
        raise AttackError(f"segmentation scores: background {background} is not in [0, {num_classes})")
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise AttackError(f"segmentation scores: {name} has labels in [{int(t.min())}, {int(t.max())}], "
                              f"outside [0, {num_classes})")


def _confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-example confusion counts ``NxKxK`` (``[n, p, t]``: pixels predicted ``p`` with target ``t``)."""
    n, k = pred.shape[0], num_classes
    index = (torch.arange(n, device=pred.device).view(n, 1, 1) * k * k + pred.long() * k + target.long()).flatten()
    return torch.bincount(index, minlength=n * k * k).view(n, k, k).to(torch.float64)


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of pixels of each example whose predicted label equals the target (``N`` float64)."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise AttackError(f"pixel_accuracy: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                          "must both be NxHxW")
    return (pred == target).flatten(1).to(torch.float64).mean(1)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *, background: int = 0) -> torch.Tensor:
    """Mean IoU over the foreground classes present in ``pred`` or ``target``; 1 when none is present."""
    _check(pred, target, num_classes, background)
    conf = _confusion(pred, target, num_classes)
    inter = torch.diagonal(conf, dim1=1, dim2=2)
    union = conf.sum(2) + conf.sum(1) - inter
    present = union > 0
    present[:, background] = False
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
    count = present.sum(1)
    return torch.where(count > 0, iou.sum(1) / count.clamp_min(1), torch.ones_like(iou[:, 0]))


def f_measure(pred: torch.Tensor, target: torch.Tensor, *, background: int = 0) -> torch.Tensor:
    """F1 of foreground-vs-background pixels, ``2TP / (2TP + FP + FN)``; 1 when both are all background."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise AttackError(f"f_measure: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                          "must both be NxHxW")
    p, t = (pred != background).flatten(1), (target != background).flatten(1)
    tp = (p & t).sum(1).to(torch.float64)
    denom = p.sum(1).to(torch.float64) + t.sum(1).to(torch.float64)  # = 2TP + FP + FN
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.ones_like(tp))


def _segments(labels: np.ndarray, background: int) -> tuple[np.ndarray, int]:
    """Number every 8-connected region of each foreground class 1..S (0 = background)."""
    ids = np.zeros(labels.shape, dtype=np.int64)
    count = 0
    for c in np.unique(labels):
        if c == background:
            continue
        regions, found = ndimage.label(labels == c, structure=_EIGHT_CONNECTED)
        ids[regions > 0] = regions[regions > 0] + count
        count += found
    return ids, count


def _sbd_one(a: np.ndarray, b: np.ndarray, background: int) -> float:
    ids_a, na = _segments(a, background)
    ids_b, nb = _segments(b, background)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    # Overlapping pixels per (segment of A, segment of B) pair of the same class, as a sparse list of
    # pairs (a dense na x nb matrix would be huge for noisy predictions).
    same = (ids_a > 0) & (ids_b > 0) & (a == b)
    pairs, overlap = np.unique(ids_a[same] * (nb + 1) + ids_b[same], return_counts=True)
    ia, ib = pairs // (nb + 1), pairs % (nb + 1)
    size_a = np.bincount(ids_a.ravel(), minlength=na + 1).astype(np.float64)
    size_b = np.bincount(ids_b.ravel(), minlength=nb + 1).astype(np.float64)
    dice = 2 * overlap / (size_a[ia] + size_b[ib])
    best_a, best_b = np.zeros(na + 1), np.zeros(nb + 1)
    np.maximum.at(best_a, ia, dice)
    np.maximum.at(best_b, ib, dice)
    return float(min(best_a[1:].mean(), best_b[1:].mean()))


def symmetric_best_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                        background: int = 0) -> torch.Tensor:
    """Symmetric best dice ``min(BD(P, T), BD(T, P))`` per example over 8-connected per-class segments.

    ``BD(A, B)`` is the mean over segments ``a`` of ``A`` of ``max_b 2|a n b| / (|a| + |b|)``, where
    ``|a n b|`` counts the pixels both segments cover *with the same class* (a segment of one class
    never matches a segment of another).
    Computed on the CPU (``scipy.ndimage.label``); the result is moved back to the inputs' device.
    """
    _check(pred, target, num_classes, background)
    a, b = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
    scores = [_sbd_one(a[i], b[i], background) for i in range(a.shape[0])]
    return torch.tensor(scores, dtype=torch.float64, device=pred.device)


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                        background: int = 0) -> dict[str, torch.Tensor]:
    """``pixel_accuracy``, ``iou``, ``sbd`` and ``f_measure`` per example (each an ``N`` float64 tensor)."""
    _check(pred, target, num_classes, background)
    return {"pixel_accuracy": pixel_accuracy(pred, target),
            "iou": mean_iou(pred, target, num_classes, background=background),
            "sbd": symmetric_best_dice(pred, target, num_classes, background=background),
            "f_measure": f_measure(pred, target, background=background)}


def binomial_standard_error(p: Union[float, torch.Tensor], n: int) -> Union[float, torch.Tensor]:
    """Standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` measured on ``n`` independent examples."""
    if not isinstance(n, int) or n < 1:
        raise AttackError(f"binomial_standard_error: n must be a positive int, got {n!r}")
    if isinstance(p, torch.Tensor):
        if bool(((p < 0) | (p > 1)).any()):
            raise AttackError("binomial_standard_error: p must lie in [0, 1]")
        return torch.sqrt(p * (1 - p) / n)
    if not 0 <= p <= 1:
        raise AttackError(f"binomial_standard_error: p must lie in [0, 1], got {p}")
    return math.sqrt(p * (1 - p) / n)
