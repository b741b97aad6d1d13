"""The shipped (standardly trained) quickstart model on the shipped held-out renders: accurate on clean
images, near-zero robust accuracy under PGD at a moderate budget (8/255), as standard models are
(seed 003: Madry et al. report 92.7% natural / 1.2% PGD on CIFAR-10 at 8/255)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import attack_peers  # noqa: E402  (loads the shipped model and a class-spread sample of the dataset)
import peers  # noqa: E402

from threedb.robustness.attacks import PGD  # noqa: E402


def test_standard_model_is_not_robust_at_8_over_255() -> None:
    model, x, y, _ = attack_peers.load("cpu", 64)
    clean = peers.robust_accuracy(model, x, y)
    adv = PGD(eps=8 / 255, steps=10)(model, x, y).adv
    robust = peers.robust_accuracy(model, adv, y)
    assert clean >= 0.85
    assert robust <= 0.05
