"""threedb.robustness.smoothing: exactness against closed forms and simulations, and its refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests
from torch import nn

from threedb.robustness.smoothing import (ABSTAIN, SmoothingError, certified_accuracy, certified_scores, certify,
                                          certify_counts, certify_equivalence, class_counts, example_seed,
                                          fwer_reject, generator, lower_confidence_bound, pixel_counts, predict,
                                          predict_counts, robustness_score, segcertify, segcertify_counts)
from threedb.robustness.smoothing.equivalence import within_threshold
from threedb.robustness.smoothing.segmentation import mode_mask
from threedb.robustness.smoothing.statistics import upper_tail_pvalues

torch.set_num_threads(1)


class LinearTwoClass(nn.Module):
    """``f(x) = 1 if <w, x> + b > 0 else 0`` with a unit-norm ``w``: the L2 distance of ``x`` to the
    boundary is ``|<w, x> + b|`` and under ``N(0, sigma^2 I)`` noise ``P(f(x + e) = f(x)) = Phi(d / sigma)``."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        super().__init__()
        w = torch.randn(int(np.prod(shape)), generator=torch.Generator().manual_seed(seed))
        self.register_buffer("w", w / w.norm())
        self.b = 0.0

    def margin(self, x: torch.Tensor) -> float:
        return float(x.flatten() @ self.w + self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([-score, score], 1)


class ThresholdSegmenter(nn.Module):
    """Per pixel: class 1 where the first channel exceeds 0.5, else 0 (logits ``Nx2xHxW``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x[:, :1] - 0.5) * 50
        return torch.cat([-score, score], 1)


def image_at_margin(model: LinearTwoClass, shape: tuple[int, ...], margin: float) -> torch.Tensor:
    """An image at signed L2 distance ``margin`` from the model's boundary."""
    x = torch.full(shape, 0.5, device=model.w.device)
    return x + (margin - model.margin(x)) * model.w.view(shape)


# --------------------------------------------------------------------------- statistics

def test_lower_confidence_bound_is_the_one_sided_clopper_pearson_quantile() -> None:
    for k, n, alpha in [(0, 10, 0.05), (7, 10, 0.05), (990, 1000, 0.001), (1000, 1000, 0.001)]:
        expected = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
        assert lower_confidence_bound(k, n, alpha) == pytest.approx(expected, abs=1e-12)


def test_lower_confidence_bound_covers_the_true_probability_at_least_1_minus_alpha() -> None:
    rng = np.random.default_rng(0)
    alpha, n, trials = 0.05, 200, 4000
    for p in (0.55, 0.8, 0.97):
        misses = np.mean(lower_confidence_bound(rng.binomial(n, p, size=trials), n, alpha) > p)
        # Clopper-Pearson is conservative: the miss rate is at most alpha (plus sampling noise of the check)
        assert misses <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def fwer_simulation(method: str, k: int, alpha: float, trials: int = 1500) -> tuple[float, float]:
    """Rate of ``>= k`` false rejections and mean true rejections for pixels with known probabilities.

    Half the pixels sit exactly on the null boundary ``p = tau`` (the hardest true nulls), the others at
    ``p = 0.95`` (false nulls)."""
    rng = np.random.default_rng(1)
    n, tau = 200, 0.75
    p = np.r_[np.full(60, tau), np.full(60, 0.95)]
    null = p <= tau
    bad, power = 0, 0.0
    for _ in range(trials):
        reject = fwer_reject(upper_tail_pvalues(rng.binomial(n, p), n, tau), alpha, method, k)  # type: ignore[arg-type]
        bad += int((reject & null).sum() >= k)
        power += float(reject[~null].mean())
    return bad / trials, power / trials


@pytest.mark.parametrize("method,k", [("holm", 1), ("bonferroni", 1), ("kfwer", 3)])
def test_segcertify_family_wise_error_is_at_most_alpha(method: str, k: int) -> None:
    alpha, trials = 0.1, 1500
    rate, power = fwer_simulation(method, k, alpha, trials)
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert power > 0.5  # the test is not trivially safe by rejecting nothing


def test_holm_agrees_with_statsmodels_and_is_at_least_as_powerful_as_bonferroni() -> None:
    rng = np.random.default_rng(2)
    for _ in range(10):
        pv = rng.uniform(0, 0.01, size=40) ** rng.uniform(0.5, 3)
        holm, bonf = fwer_reject(pv, 0.05, "holm"), fwer_reject(pv, 0.05, "bonferroni")
        assert np.array_equal(holm, multipletests(pv, alpha=0.05, method="holm")[0])
        assert (holm | bonf).sum() == holm.sum()  # every Bonferroni rejection is a Holm rejection
        assert np.array_equal(fwer_reject(pv, 0.05, "kfwer", 1), holm)
        assert fwer_reject(pv, 0.05, "kfwer", 4).sum() >= holm.sum()


# --------------------------------------------------------------------------- CERTIFY / PREDICT

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
def test_certify_matches_the_closed_form_radius_of_a_linear_classifier(device: str) -> None:
    """Noise is drawn on the model's device: CUDA certificates are as exact as CPU ones (not identical)."""
    shape = (3, 8, 8)
    model = LinearTwoClass(shape).to(device)
    sigma, alpha, n = 0.25, 0.001, 20_000
    for margin in (0.1, 0.3, 0.6):
        x = image_at_margin(model, shape, margin).to(device)
        cert = certify(model, x, sigma=sigma, n0=100, n=n, alpha=alpha, batch_size=2000, seed=3)
        p_true = stats.norm.cdf(margin / sigma)
        se = math.sqrt(p_true * (1 - p_true) / n)
        assert cert.prediction == 1
        assert cert.count / n == pytest.approx(p_true, abs=4 * se)
        # never more than the truth (up to the 1 - alpha confidence), and close to it
        assert cert.p_lower <= p_true
        assert cert.radius <= margin + 1e-9
        assert cert.radius >= sigma * stats.norm.ppf(p_true - 6 * se)


def test_certify_abstains_on_the_decision_boundary_and_certifies_the_other_side() -> None:
    shape = (1, 4, 4)
    model = LinearTwoClass(shape, seed=1)
    on_boundary = certify(model, image_at_margin(model, shape, 0.0), sigma=0.5, n0=50, n=2000, alpha=0.001)
    assert on_boundary.prediction == ABSTAIN and on_boundary.radius == 0.0 and on_boundary.abstained
    other_side = certify(model, image_at_margin(model, shape, -0.4), sigma=0.5, n0=50, n=2000, alpha=0.001)
    assert other_side.prediction == 0 and other_side.radius > 0


def test_predict_uses_the_two_sided_test_of_the_top_two_counts() -> None:
    assert predict_counts([60, 40], alpha=0.05) == ABSTAIN  # p = 0.057
    assert predict_counts([5, 70, 30], alpha=0.05) == 1
    assert predict_counts([0, 0, 0], alpha=0.05) == ABSTAIN
    shape = (1, 4, 4)
    model = LinearTwoClass(shape)
    assert predict(model, image_at_margin(model, shape, 0.5), sigma=0.25, n=500, alpha=0.001) == 1


def test_certify_counts_selects_on_counts0_and_bounds_on_counts() -> None:
    cert = certify_counts([10, 80, 10], [500, 400, 100], sigma=0.5, alpha=0.001)
    assert cert.candidate == 1 and cert.count == 400 and cert.abstained  # selection, not estimation, picks
    cert = certify_counts([0, 100], [10, 990], sigma=0.5, alpha=0.001)
    assert cert.prediction == 1
    assert cert.radius == pytest.approx(0.5 * stats.norm.ppf(stats.beta.ppf(0.001, 990, 11)))


def test_sampling_is_deterministic_per_seed_and_restores_the_model_mode() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 3))
    model.train()
    x = torch.rand(3, 2, 2)
    a = class_counts(model, x, sigma=0.5, num=300, batch_size=64, gen=generator("cpu", 7))
    b = class_counts(model, x, sigma=0.5, num=300, batch_size=64, gen=generator("cpu", 7))
    c = class_counts(model, x, sigma=0.5, num=300, batch_size=64, gen=generator("cpu", 8))
    assert torch.equal(a, b) and not torch.equal(a, c) and int(a.sum()) == 300
    assert model.training  # eval() during sampling (dropout off), train() again afterwards
    assert example_seed(0, "img_1") == example_seed(0, "img_1") != example_seed(0, "img_2")


def test_certified_accuracy_counts_abstentions_and_wrong_predictions_as_failures() -> None:
    radii = [0.0, 0.3, 0.6, 0.9]
    correct = [False, True, True, False]
    assert certified_accuracy(radii, correct, [0, 0.3, 0.5, 0.7]).tolist() == [0.5, 0.5, 0.25, 0.0]


# --------------------------------------------------------------------------- segmentation

@pytest.mark.parametrize("device", DEVICES)
def test_segcertify_certifies_clear_pixels_and_abstains_on_ambiguous_ones(device: str) -> None:
    x = torch.zeros(1, 6, 6, device=device)
    x[0, :, :2] = 0.05     # clearly class 0
    x[0, :, 2:4] = 0.5     # on the threshold: a coin flip under noise
    x[0, :, 4:] = 0.95     # clearly class 1
    out = segcertify(ThresholdSegmenter(), x, sigma=0.25, tau=0.75, n0=50, n=500, alpha=0.001,
                     methods=("holm", "bonferroni", "pixel_bonferroni", "whole_mask"), seed=0)
    holm = out["holm"].labels
    assert (holm[:, :2] == 0).all() and (holm[:, 4:] == 1).all() and (holm[:, 2:4] == ABSTAIN).all()
    assert out["holm"].radius == pytest.approx(0.25 * stats.norm.ppf(0.75))
    assert torch.equal(out["bonferroni"].labels, holm)
    assert (out["pixel_bonferroni"].labels[:, 2:4] == ABSTAIN).all() and out["pixel_bonferroni"].radius > 0
    # the ambiguous pixels make the exact mask essentially never repeat: the whole-mask baseline abstains
    assert (out["whole_mask"].labels == ABSTAIN).all() and out["whole_mask"].radius == 0.0
    target = (x[0] > 0.5).long().cpu()
    scores = certified_scores(holm, target, 2)
    assert scores["abstain_rate"] == pytest.approx(12 / 36)
    assert scores["pixel_accuracy"] == pytest.approx(24 / 36)  # abstained pixels count as wrong
    assert scores["iou"] == pytest.approx(12 / 12)  # class 1: TP 12, the 0.5 pixels are class 0 in target
    scores = certified_scores(torch.full_like(holm, ABSTAIN), target, 2)
    assert scores["pixel_accuracy"] == 0.0 and scores["iou"] == 0.0


def test_whole_mask_certifies_a_stable_mask_and_segcertify_counts_checks_shapes() -> None:
    x = torch.zeros(1, 4, 4)
    x[0, :, 2:] = 1.0
    out = segcertify(ThresholdSegmenter(), x, sigma=0.1, n0=20, n=200, alpha=0.001, methods=("whole_mask",))
    assert torch.equal(out["whole_mask"].labels, (x[0] > 0.5).long()) and out["whole_mask"].radius > 0
    masks = torch.tensor([[[0]], [[1]], [[1]], [[0]], [[1]]])
    mask, count = mode_mask(masks)
    assert int(mask) == 1 and count == 3
    with pytest.raises(SmoothingError, match="KxHxW"):
        segcertify_counts(torch.zeros(2, 3, 3, dtype=torch.long), torch.zeros(2, 3, 4, dtype=torch.long), sigma=0.25)


# --------------------------------------------------------------------------- probabilistic local equivalence

def test_equivalence_with_accuracy_reduces_to_smoothing_of_the_top_class() -> None:
    shape = (1, 4, 4)
    model = LinearTwoClass(shape)
    x = image_at_margin(model, shape, 0.3)
    ple = certify_equivalence(model, x, sigma=0.25, n=4000, alpha=0.001, t=0.5, score="accuracy",
                              batch_size=500, seed=5)
    counts = class_counts(model, x, sigma=0.25, num=4000, batch_size=500, gen=generator("cpu", 5))
    assert ple.count == int(counts[1])
    assert ple.radius == pytest.approx(certify_counts([0, 1], counts, sigma=0.25, alpha=0.001).radius)


def test_equivalence_on_segmentation_with_and_without_labels() -> None:
    x = torch.zeros(1, 8, 8)
    x[0, 2:6, 2:6] = 0.9
    label = (x[0] > 0.5).long()
    model = ThresholdSegmenter()
    free = certify_equivalence(model, x, sigma=0.1, n=160, alpha=0.05, t=0.1, score="sbd", seed=0)
    labelled = certify_equivalence(model, x, sigma=0.1, n=160, alpha=0.05, t=0.1, score="dice", label=label, seed=0)
    assert not free.abstained and free.radius > 0 and labelled.clean_score == 1.0 and labelled.radius > 0
    fragile = certify_equivalence(model, torch.full((1, 8, 8), 0.5), sigma=0.1, n=160, alpha=0.05, t=0.1,
                                  score="iou", num_classes=2, seed=0)
    assert fragile.abstained and fragile.radius == 0.0
    assert robustness_score([free, fragile]) == pytest.approx(free.radius / 2)


def test_the_corrected_ratio_handles_zero_clean_scores() -> None:
    scores = torch.tensor([0.0, 0.5, 0.95, 1.0], dtype=torch.float64)
    assert within_threshold(scores, 0.1, clean=1.0).tolist() == [False, False, True, True]
    assert within_threshold(scores, 0.1, clean=0.5).tolist() == [False, True, True, True]  # better counts
    assert within_threshold(scores, 0.1, clean=0.0).tolist() == [False, True, True, True]  # -inf < t, 1 is not
    assert within_threshold(scores, 0.1).tolist() == [False, False, True, True]


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("kwargs,match", [
    ({"sigma": 0.0}, "sigma must be a positive"), ({"sigma": -1.0}, "sigma must be a positive"),
    ({"sigma": float("nan")}, "sigma must be a positive"), ({"n0": 200, "n": 100}, "must not exceed n"),
    ({"alpha": 0.0}, "alpha must be"), ({"alpha": 1.0}, "alpha must be"), ({"alpha": 1.5}, "alpha must be"),
    ({"n0": 0}, "n0 must be a positive"), ({"batch_size": 0}, "batch_size"),
])
def test_certify_refuses_bad_parameters(kwargs: dict, match: str) -> None:
    shape = (1, 4, 4)
    args = {"sigma": 0.25, "n0": 10, "n": 100, "alpha": 0.001} | kwargs
    with pytest.raises(SmoothingError, match=match):
        certify(LinearTwoClass(shape), torch.rand(shape), **args)


def test_models_of_the_wrong_kind_are_refused_with_the_task_to_use() -> None:
    with pytest.raises(SmoothingError, match="segmentation certification"):
        certify(ThresholdSegmenter(), torch.rand(1, 4, 4), sigma=0.25, n0=10, n=20)
    with pytest.raises(SmoothingError, match="classification certification"):
        pixel_counts(LinearTwoClass((1, 4, 4)), torch.rand(1, 4, 4), sigma=0.25, num=10, batch_size=5,
                     gen=generator("cpu", 0))
    with pytest.raises(SmoothingError, match="NxK"):
        certify(lambda x: x.flatten(), torch.rand(1, 4, 4), sigma=0.25, n0=10, n=20)
    with pytest.raises(SmoothingError, match="one floating-point image"):
        certify(LinearTwoClass((1, 4, 4)), torch.rand(2, 1, 4, 4), sigma=0.25, n0=10, n=20)
    with pytest.raises(SmoothingError, match="tau"):
        segcertify(ThresholdSegmenter(), torch.rand(1, 4, 4), tau=0.4)
    with pytest.raises(SmoothingError, match="unknown segmentation"):
        segcertify(ThresholdSegmenter(), torch.rand(1, 4, 4), methods=("magic",))
    with pytest.raises(SmoothingError, match="unknown multiple-testing"):
        fwer_reject([0.01], 0.05, "hochberg")  # type: ignore[arg-type]
