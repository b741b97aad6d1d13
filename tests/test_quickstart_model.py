"""The shipped quickstart model: its card matches its weights, and its stated held-out accuracy is
reproduced by a real `threedb run` on fresh renders in the held-out HDRIs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy.stats import binom

from threedb.evaluators.training.card import CardError, verify_card

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "assets" / "models" / "quickstart"


def test_card_matches_weights_and_config():
    card = verify_card(MODEL_DIR)
    assert card["weights"]["bytes"] < 8 * 2**20                       # "a few MB"
    assert 64 <= card["preprocessing"]["resolution"] <= 128
    assert card["metrics"]["test_accuracy"] >= 0.90
    assert set(card["data"]["test"]["environments"]).isdisjoint(card["data"]["train"]["environments"])
    classes = json.loads((MODEL_DIR / "classes.json").read_text())
    assert classes == [c["name"] for c in card["classes"]]
    classmap = json.loads((MODEL_DIR / "classmap.json").read_text())
    assert classmap == {c["uid"]: c["index"] for c in card["classes"]}
    # the quickstart experiment evaluates exactly this model, with the card's preprocessing
    inference = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())["inference"]
    for key in ("module", "class", "resolution", "normalization"):
        assert inference[key] == card["inference"][key], key
    assert inference["args"]["width"] == card["inference"]["args"]["width"]


def test_verify_card_rejects_other_weights(tmp_path):
    for name in ("model.pt", "card.json"):
        (tmp_path / name).write_bytes((MODEL_DIR / name).read_bytes())
    verify_card(tmp_path)
    data = bytearray((tmp_path / "model.pt").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "model.pt").write_bytes(bytes(data))
    with pytest.raises(CardError, match="model.pt"):
        verify_card(tmp_path)


def test_stated_accuracy_reproduced_on_fresh_heldout_renders(tmp_path):
    """Two new proposals per (held-out HDRI, object) with another seed: 44 renders, evaluated by the
    run pipeline. The count of correct ones must be plausible under the card's accuracy (binomial,
    one-sided, 0.1% level)."""
    card = verify_card(MODEL_DIR)
    quickstart = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    inference = dict(quickstart["inference"])
    for key in ("weights", "label_map"):
        inference[key] = str((REPO / "configs" / inference[key]).resolve())
    evaluation = {"type": "classification", "args": {
        "classmap_path": str((REPO / "configs" / quickstart["evaluation"]["args"]["classmap_path"]).resolve())}}
    config = {"base_config": str(REPO / "configs" / "quickstart_heldout_data.yaml"), "seed": 12345,
              "policy": {"type": "random", "samples": 2}, "inference": inference, "evaluation": evaluation,
              "logging": {"log_images": "none"}}
    path = tmp_path / "heldout_eval.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "threedb.sim.run.local", str(path), "--out", str(tmp_path / "run"),
                           "--render-workers", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "details.log").read_text().splitlines()]
    assert len(rows) == 44 and all(r["status"] == "ok" for r in rows)
    assert {r["environment"] for r in rows} == {"courtyard.exr", "sunrise.exr"}
    correct = sum(bool(r["is_correct"]) for r in rows)
    stated = card["metrics"]["test_accuracy"]
    floor = binom.ppf(0.001, len(rows), stated)
    assert correct >= floor, f"{correct}/{len(rows)} correct; the card states {stated:.3f} (floor {floor:.0f})"
