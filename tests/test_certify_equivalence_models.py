"""Probabilistic local equivalence separates a standard from an adversarially trained segmentation model
(seed 000's qualitative result), on real renders with real training and the real ``threedb certify`` job.

Two tiny UNets (width 8, depth 2, 32 px) are trained by ``threedb train`` on the shipped dataset's
courtyard renders and their binary object masks, the same way except the objective: ``cross_entropy``
vs ``fbf_trades`` at eps 8/255 (the settings of tests/test_adversarial_training.py's segmentation runs,
whose config helper this reuses). ``threedb certify`` with ``task: equivalence`` (the paper's sigma 0.1,
SBD, t 0.1; n 100, alpha 0.05) then certifies both on the 11 sunrise renders of one object each. The
adversarially trained model's robustness score (mean radius, abstentions 0) is far higher, with and
without labels, although both models segment the clean images about equally well.

Measured by hand (10 sunrise images, sigma 0.1, n 100, alpha 0.05, t 0.1, SBD; the largest radius n 100
can certify is 0.1 * PhiInv(0.05 ** (1 / 100)) = 0.189), robustness score standard / fbf_trades at eps
8/255 without labels (with labels): seed 0: 0.000 (0.000) / 0.189 (0.189), seed 1: 0.000 (0.000) / 0.189
(0.189), seed 2: 0.002 (0.011) / 0.189 (0.189), the same at eps 24/255; the standard model abstains on
9-10 of 10 images, the robust one on none. At sigma 0.05 both certify (0.04-0.06 vs 0.094), at sigma 0.2
the standard model abstains everywhere (the robust one: 0.28-0.38). Dice instead of SBD: the same order.
docs/certify.md, section "Measured: segmentation and local equivalence", has the job-level figures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from scipy import stats

from test_adversarial_training import NORMALIZATION, SHIPPED, net_file, rendered_config, run  # noqa: F401
from threedb.evaluators.certify.config import load_certify_config
from threedb.evaluators.certify.runner import run_certify_job

SEED = 0
EPS = 8 / 255
SIGMA, N, ALPHA, T = 0.1, 100, 0.05, 0.1
UNET = {"module": "threedb.evaluators.architectures", "class": "UNet", "args": {"width": 8, "depth": 2},
        "resolution": 32, "normalization": NORMALIZATION}
OBJECTIVES = {"standard": ("cross_entropy", {}),
              "fbf_trades": ("fbf_trades", {"eps": EPS, "eps_ramp": 0.5, "steps": 2, "beta": 6.0})}
MODES = ("without_labels", "with_labels")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread (2 shared cores)


def certify_config(folder: Path, card: Path) -> Path:
    """``threedb certify`` local equivalence of ``card`` on the sunrise renders, one per object."""
    data = {"seed": 0, "device": "cpu", "model": {"card": str(card)},
            "data": {"root": str(SHIPPED), "environments": ["sunrise"], "max_examples": 11, "batch_size": 11},
            "task": "equivalence",
            "smoothing": {"sigma": SIGMA, "n": N, "alpha": ALPHA, "batch_size": N},
            "equivalence": {"score": "sbd", "t": T, "use_labels": "both"}, "output": "out"}
    path = folder / "certify.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def certified(tmp_path_factory, net_file) -> dict[str, dict[str, Any]]:  # noqa: F811
    """Per objective: the training card and the certify job's report (8 epochs each, lr 0.01, batch 16)."""
    torch.set_num_threads(1)
    results = {}
    for name, (objective, args) in OBJECTIVES.items():
        folder = tmp_path_factory.mktemp(name)
        config = rendered_config(net_file, objective, args, epochs=8, task="segmentation", model=UNET, seed=SEED,
                                 training={"lr": 0.01, "batch_size": 16}, card={"robust_eval": {"enabled": False}})
        card = run(folder, config)
        report = run_certify_job(load_certify_config(certify_config(folder, folder / "out" / "card.json")),
                                 out=folder / "certify", quiet=True)
        rows = [json.loads(line) for line in (folder / "certify" / "examples.jsonl").read_text().splitlines()]
        results[name] = {"card": card, "report": report, "rows": rows}
        head = report["headline"]
        print(f"\n{name}: clean test scores {card['metrics']['test_scores']}; robustness score "
              + ", ".join(f"{m} {head[f'robustness_score.{m}']:.4f} (abstain {head[f'abstain_rate.{m}']:.2f})"
                          for m in MODES))
    return results


def test_both_models_segment_the_clean_renders(certified):
    for name, result in certified.items():
        scores = result["card"]["metrics"]["test_scores"]
        assert scores["f_measure"] > 0.6 and scores["pixel_accuracy"] > 0.9, name
        rows = result["rows"]
        assert len(rows) == 11 and len({r["label"] for r in rows}) == 11          # one sunrise render per object
        # the with-labels mode's clean SBD: the clean predictions are comparably good
        assert result["report"]["headline"]["clean_score.with_labels"] > 0.6, name
    std, robust = (certified[k]["report"]["headline"]["clean_score.with_labels"] for k in OBJECTIVES)
    assert abs(std - robust) < 0.15


def test_adversarial_training_buys_a_much_higher_robustness_score(certified):
    largest = SIGMA * stats.norm.ppf(ALPHA ** (1 / N))          # every sample within t: 0.189
    std, robust = certified["standard"]["report"]["headline"], certified["fbf_trades"]["report"]["headline"]
    for mode in MODES:
        s, r = std[f"robustness_score.{mode}"], robust[f"robustness_score.{mode}"]
        assert 0 <= s <= largest + 1e-9 and 0 <= r <= largest + 1e-9
        assert r > 0.6 * largest                       # the robust model is certified near the maximum ...
        assert r > s + 0.1 and r > 3 * s, mode         # ... the standard one barely at all
        assert robust[f"abstain_rate.{mode}"] <= 0.3
        assert std[f"abstain_rate.{mode}"] >= 0.5
        # the score is the mean radius of the rows, abstentions counting 0
        for name, head in (("standard", std), ("fbf_trades", robust)):
            radii = [row["modes"][mode]["radius"] if not row["modes"][mode]["abstained"] else 0.0
                     for row in certified[name]["rows"]]
            assert head[f"robustness_score.{mode}"] == pytest.approx(sum(radii) / len(radii))
