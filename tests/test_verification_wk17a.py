"""The Wong & Kolter network of the MILP-verification paper (MIPVerify's own test cases, eps 0.1, L-inf).

Known: MNIST test samples 1 and 2 (1-indexed) are robust; sample 9's minimum adversarial distortion is
0.0940014207 (so it is sat at 0.1 and unsat below 0.094); sample 248 is misclassified already. The exact
0.0940014 to 1e-4 takes minutes here: benchmarks/verification_wk17a.py measures it.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from threedb.robustness.verification.distortion import minimum_distortion
from threedb.robustness.verification.network import from_torch
from threedb.robustness.verification.spec import local_robustness
from threedb.robustness.verification.verifier import VerifierOptions, verify

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WEIGHTS = DATA / "mipverify" / "WK17a_linf0.1.pth"
if not WEIGHTS.exists():
    pytest.skip(f"public benchmark data not found at {DATA}", allow_module_level=True)


@pytest.fixture(scope="module")
def wk17a():
    module = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                           nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10))
    module.load_state_dict(torch.load(WEIGHTS, weights_only=True, map_location="cpu"))
    return module.eval(), from_torch(module, (1, 28, 28), source="WK17a")


@pytest.fixture(scope="module")
def mnist():
    images = np.frombuffer(gzip.open(DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 784)[:300] / 255.0, labels[:300].astype(int)


def torch_check(module: nn.Module):
    def check(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.tensor(x, dtype=torch.float32).reshape(1, 1, 28, 28))[0].double().numpy()
    return check


def test_the_network_is_the_published_one(wk17a, mnist) -> None:
    module, network = wk17a
    images, labels = mnist
    with torch.no_grad():
        logits = module(torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28)).double().numpy()
    np.testing.assert_allclose(network(images[:20]), logits[:20], atol=1e-4)
    assert (logits.argmax(1) == labels).mean() >= 0.97


@pytest.mark.parametrize("sample", [1, 2])
def test_samples_1_and_2_are_robust_at_0_1(wk17a, mnist, sample: int) -> None:
    module, network = wk17a
    images, labels = mnist
    spec = local_robustness(images[sample - 1], labels[sample - 1], 0.1, 10)
    result = verify(network, spec, VerifierOptions(timeout=120), check=torch_check(module))
    assert result.status == "unsat", result.summary()


def test_sample_248_is_misclassified(wk17a, mnist) -> None:
    module, network = wk17a
    images, labels = mnist
    result = minimum_distortion(network, images[247], labels[247], max_eps=0.1, check=torch_check(module))
    assert result.status == "misclassified" and result.distortion == 0.0


def test_sample_9_is_sat_at_0_1_and_unsat_just_below_its_minimum_distortion(wk17a, mnist) -> None:
    module, network = wk17a
    images, labels = mnist
    x, label = images[8], labels[8]
    # the adversarial region at 0.1 is small (the minimum is 0.094): a stronger PGD than the default finds
    # it in seconds, where the MILP needs tens of seconds
    sat = verify(network, local_robustness(x, label, 0.1, 10),
                 VerifierOptions(timeout=120, attack_steps=100, attack_restarts=10), check=torch_check(module))
    assert sat.status == "sat", sat.summary()
    assert np.abs(sat.counterexample - x).max() <= 0.1 + 1e-9
    assert torch_check(module)(sat.counterexample).argmax() != label      # the original model agrees
    unsat = verify(network, local_robustness(x, label, 0.0935, 10), VerifierOptions(timeout=120))
    assert unsat.status == "unsat", unsat.summary()
