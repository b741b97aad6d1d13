"""threedb.robustness.metrics: hand-computed cases (edge conventions included) and agreement with
independent computations (scikit-learn's scores, scikit-image's labelling with a brute-force SBD)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from threedb.robustness.attacks import AttackError
from threedb.robustness.metrics import (binomial_standard_error, f_measure, mean_iou, pixel_accuracy,
                                        segmentation_scores, symmetric_best_dice)


def maps(*rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def test_pixel_accuracy_and_iou_by_hand() -> None:
    pred, target = maps([[1, 1], [0, 2]]), maps([[1, 0], [0, 2]])
    assert pixel_accuracy(pred, target).tolist() == [0.75]
    # class 1: |P n T| = 1, |P u T| = 2; class 2: 1/1 -> mean 0.75
    assert mean_iou(pred, target, 3).tolist() == [0.75]
    # a class only predicted counts with IoU 0: classes 1 (1/1), 2 (0/1)
    assert mean_iou(maps([[1, 2]]), maps([[1, 0]]), 3).tolist() == [0.5]
    # background can be any label
    assert mean_iou(maps([[1, 1]]), maps([[1, 0]]), 2, background=1).tolist() == [0.0]


def test_edge_conventions() -> None:
    empty, full = torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(1, 3, 3, dtype=torch.long)
    scores = segmentation_scores(empty, empty, 2)
    assert {k: v.tolist() for k, v in scores.items()} == {"pixel_accuracy": [1.0], "iou": [1.0], "sbd": [1.0],
                                                         "f_measure": [1.0]}
    for a, b in ((empty, full), (full, empty)):
        scores = segmentation_scores(a, b, 2)
        assert {k: v.tolist() for k, v in scores.items()} == {"pixel_accuracy": [0.0], "iou": [0.0],
                                                             "sbd": [0.0], "f_measure": [0.0]}


def test_f_measure_by_hand() -> None:
    # predicted foreground 3 pixels, target foreground 2, both 2: P = 2/3, R = 1, F = 0.8
    pred, target = maps([[1, 2, 1, 0]]), maps([[1, 2, 0, 0]])
    assert f_measure(pred, target).tolist() == pytest.approx([0.8])
    # class labels do not matter for F: foreground vs background
    assert f_measure(maps([[2, 2]]), maps([[1, 1]])).tolist() == [1.0]


def test_symmetric_best_dice_by_hand() -> None:
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, 0, :2] = 1          # a1: 2 pixels
    pred[0, 3, 3] = 1           # a2: 1 pixel, separate
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1       # b1: 4 pixels
    # dice(a1, b1) = 2*2/6 = 2/3, dice(a2, b1) = 0 -> BD(P, T) = 1/3, BD(T, P) = 2/3
    assert symmetric_best_dice(pred, target, 2).tolist() == pytest.approx([1 / 3])
    assert symmetric_best_dice(target, pred, 2).tolist() == pytest.approx([1 / 3])


def test_sbd_segments_are_8_connected_and_per_class() -> None:
    diagonal = maps([[1, 0], [0, 1]])
    corner = maps([[1, 0], [0, 0]])
    # 8-connected: the diagonal is one segment of 2 pixels, dice with the corner 2/3 both ways
    # (4-connected it would be 2 segments and SBD 0.5)
    assert symmetric_best_dice(diagonal, corner, 2).tolist() == pytest.approx([2 / 3])
    # the same pixels with another class match nothing
    assert symmetric_best_dice(maps([[1, 1]]), maps([[2, 2]]), 3).tolist() == [0.0]
    # two adjacent classes are two segments
    assert symmetric_best_dice(maps([[1, 2]]), maps([[1, 2]]), 3).tolist() == [1.0]
    assert symmetric_best_dice(maps([[1, 2]]), maps([[1, 1]]), 3).tolist() == pytest.approx([2 / 3 / 2])


def brute_force_sbd(a: np.ndarray, b: np.ndarray) -> float:
    """SBD from scikit-image's labelling and explicit sets of pixels."""
    from skimage.measure import label

    def segments(x: np.ndarray) -> list[tuple[int, set[tuple[int, int]]]]:
        out = []
        for c in sorted(set(x.ravel().tolist()) - {0}):
            lab = label(x == c, connectivity=2, background=0)
            for s in range(1, lab.max() + 1):
                out.append((c, set(zip(*np.nonzero(lab == s)))))
        return out

    sa, sb = segments(a), segments(b)
    if not sa and not sb:
        return 1.0
    if not sa or not sb:
        return 0.0

    def bd(x: list, y: list) -> float:
        return float(np.mean([max(2 * len(p & q) / (len(p) + len(q)) if c == d else 0.0 for d, q in y)
                              for c, p in x]))
    return min(bd(sa, sb), bd(sb, sa))


def random_masks(n: int, k: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blobby label maps: coarse random labels upsampled, the prediction a noisy copy of the target."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (n, 1, size // 4, size // 4), generator=g).float()
    target = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    target[torch.rand(target.shape, generator=g) < 0.5 * (target == 0)] = 0  # more background
    flip = torch.rand(target.shape, generator=g) < 0.1
    pred = torch.where(flip, torch.randint(0, k, target.shape, generator=g), target)
    return pred, target


def test_agrees_with_independent_computations() -> None:
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score

    k = 4
    pred, target = random_masks(6, k, 24, seed=0)
    scores = segmentation_scores(pred, target, k)
    for i in range(len(pred)):
        p, t = pred[i].numpy().ravel(), target[i].numpy().ravel()
        assert scores["pixel_accuracy"][i].item() == pytest.approx(accuracy_score(t, p))
        present = sorted((set(p.tolist()) | set(t.tolist())) - {0})
        assert scores["iou"][i].item() == pytest.approx(
            jaccard_score(t, p, labels=present, average="macro", zero_division=0))
        assert scores["f_measure"][i].item() == pytest.approx(f1_score(t != 0, p != 0))
        assert scores["sbd"][i].item() == pytest.approx(brute_force_sbd(pred[i].numpy(), target[i].numpy()))
    # the noisy copy is imperfect (its flipped pixels are many small segments, which SBD punishes);
    # an unrelated prediction scores lower on every score
    assert 0 < scores["sbd"].min() and scores["sbd"].max() < 1
    other, _ = random_masks(6, k, 24, seed=1)
    worse = segmentation_scores(other, target, k)
    assert all(worse[key].mean() < scores[key].mean() for key in scores)


def test_binomial_standard_error() -> None:
    assert binomial_standard_error(0.925, 440) == pytest.approx(math.sqrt(0.925 * 0.075 / 440))
    assert binomial_standard_error(1.0, 10) == 0.0
    se = binomial_standard_error(torch.tensor([0.5, 0.9]), 100)
    assert se.tolist() == pytest.approx([0.05, 0.03])
    with pytest.raises(AttackError, match="n must be"):
        binomial_standard_error(0.5, 0)
    with pytest.raises(AttackError, match=r"\[0, 1\]"):
        binomial_standard_error(1.5, 10)


@pytest.mark.parametrize("pred, target, match", [
    (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "integer labels"),
    (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), "NxHxW"),
    (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), "differ in shape"),
    (torch.full((1, 2, 2), 5), torch.zeros(1, 2, 2, dtype=torch.long), r"outside \[0, 3\)"),
])
def test_bad_input_is_one_clear_error(pred: torch.Tensor, target: torch.Tensor, match: str) -> None:
    with pytest.raises(AttackError, match=match):
        segmentation_scores(pred, target, 3)
