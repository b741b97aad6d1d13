"""Agreement with the peer libraries (torchattacks 3.5.1, ART 1.20.1, installed by scripts/setup.sh):
on the shipped quickstart model and dataset, with the same eps, steps, step size, restarts and
queries, threedb's attacks are at least as strong (robust accuracy at most the peer's plus one
binomial standard error). Speed is compared in benchmarks/attack_peers.py, never here."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import attack_peers  # noqa: E402  (benchmarks/attack_peers.py)
import peers  # noqa: E402

from threedb.robustness import attacks  # noqa: E402

EPS, STEPS, N = 2 / 255, 5, 48
ALPHA = 2.5 * EPS / STEPS


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return attack_peers.load("cpu", N)


def _check(model, x, y, ours: torch.Tensor, theirs: dict[str, torch.Tensor]) -> None:
    ours_acc = peers.robust_accuracy(model, ours, y)
    clean = peers.robust_accuracy(model, x, y)
    assert ours_acc < clean            # the attack does something on this model
    for name, adv in theirs.items():
        assert float((adv - x).abs().max()) <= EPS + 1e-5
        acc = peers.robust_accuracy(model, adv, y)
        assert ours_acc <= acc + peers.standard_error(acc, len(y)), (name, ours_acc, acc)


def test_pgd_at_least_as_strong_as_peers(setup) -> None:
    model, x, y, k = setup
    ours = attacks.PGD(eps=EPS, steps=STEPS, step_size=ALPHA)(model, x, y).adv
    _check(model, x, y, ours, {"torchattacks": peers.torchattacks_pgd(EPS, STEPS, ALPHA)(model, x, y),
                               "art": peers.art_pgd(EPS, STEPS, ALPHA, 1, k, N)(model, x, y)})


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_at_least_as_strong_as_peers(setup, loss) -> None:
    model, x, y, k = setup
    ours = attacks.APGD(eps=EPS, steps=STEPS, loss=loss)(model, x, y).adv
    _check(model, x, y, ours, {"torchattacks": peers.torchattacks_apgd(EPS, STEPS, loss)(model, x, y),
                               "art": peers.art_apgd(EPS, STEPS, loss, k, N)(model, x, y)})


def test_square_at_least_as_strong_as_peers(setup) -> None:
    model, x, y, k = setup
    queries = 100
    ours = attacks.Square(eps=EPS, queries=queries)(model, x, y).adv
    # ART's Square takes about a minute here (one query at a time); benchmarks/attack_peers.py runs it.
    _check(model, x, y, ours, {"torchattacks": peers.torchattacks_square(EPS, queries)(model, x, y)})
