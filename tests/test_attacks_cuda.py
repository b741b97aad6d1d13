"""CPU and CUDA give the same attack results within floating-point tolerance (the attacks draw their
random numbers from a CPU generator, so both devices start from the same points). Runs only where a
CUDA device is present (a lent GPU machine); CI machines have none and skip it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import attack_peers  # noqa: E402  (loads the shipped model and a class-spread sample of the dataset)

from threedb.robustness.attacks import APGD, PGD, Square  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
EPS = 4 / 255


@pytest.mark.parametrize("make", [lambda: PGD(eps=EPS, steps=10), lambda: APGD(eps=EPS, steps=10),
                                  lambda: Square(eps=EPS, queries=50)], ids=["pgd", "apgd", "square"])
def test_cpu_and_cuda_agree(make) -> None:
    results = {}
    for device in ("cpu", "cuda"):
        model, x, y, _ = attack_peers.load(device, 32)
        torch.backends.cudnn.deterministic = True
        result = make()(model, x, y)
        with torch.no_grad():
            results[device] = (model(result.adv).argmax(1).cpu(), result.adv.cpu(), result.success.cpu())
    (pred_cpu, adv_cpu, ok_cpu), (pred_gpu, adv_gpu, ok_gpu) = results["cpu"], results["cuda"]
    # the same examples broken and the same predictions, up to a near-tie or two (sign steps amplify
    # float differences of ~0 gradient entries, so the perturbations themselves may drift apart)
    assert int((ok_cpu != ok_gpu).sum()) <= 2
    assert int((pred_cpu != pred_gpu).sum()) <= 2
    assert float((adv_cpu - adv_gpu).abs().max()) <= 2 * EPS + 1e-6   # both inside the same ball
