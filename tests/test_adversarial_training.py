"""Adversarial training with ``threedb train`` (objectives of :mod:`threedb.robustness.training`): real
tiny models, real data, real training.

* Catastrophic overfitting at small scale (MNIST test images from ``../shared/data/mnist``, a 2-conv
  CNN, eps 0.3 ramped in over the first 40% of training): FGSM training (no random start) ends with
  high FGSM accuracy but PGD accuracy near 0; FBF (random start) with the PGD check keeps clearly
  non-zero PGD accuracy.
* Rendered data (the shipped dataset, courtyard renders for training, sunrise renders for testing, a
  tiny CNN at 32 px, eps 8/255): standard training has near-chance PGD accuracy, ``pgd``/``fbf``/
  ``trades`` keep substantially more; TRADES with beta 0 is exactly cross-entropy training.
* Segmentation (a tiny UNet on the same split, eps 24/255): under a targeted object-removal PGD-20 the
  F-measure of a standard model is near 0, that of ``fbf_trades`` stays most of its clean F.
* Resume of an adversarial run with the PGD check (and an early stop) ends with the uninterrupted
  run's weights; the card holds the objective, eps, clean and robust accuracy.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from threedb.evaluators.datasets import ImageDataset
from threedb.evaluators.models import load_model
from threedb.evaluators.pixel_space import pixel_model
from threedb.evaluators.training.config import load_train_config
from threedb.evaluators.training.data import SegmentedImages
from threedb.evaluators.training.loop import train
from threedb.evaluators.training.robust import stack
from threedb.robustness.attacks import FGSM, PGD, Segmentation
from threedb.robustness.metrics import segmentation_scores
from threedb.robustness.training import (FBFTRADESTraining, FBFTraining, FGSMTraining, PGDTraining,
                                         TRADESTraining, kl_divergence)
from threedb.sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "datasets" / "quickstart_heldout"
MNIST = ROOT.parent / "shared" / "data" / "mnist"
TINY_NET = '''
from torch import nn

class Net(nn.Sequential):
    """Two stride-2 convolutions and two linear layers (no batch norm: train and eval mode agree)."""

    def __init__(self, num_classes, side=32, width=16):
        super().__init__(nn.Conv2d(3, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2 * width * (side // 4) ** 2, 100), nn.ReLU(),
                         nn.Linear(100, num_classes))
'''
NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
EPS = 8 / 255
NO_AUGMENT = {"crop_scale": [1.0, 1.0], "flip": False, "color_jitter": 0.0}


@pytest.fixture(scope="module", autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("net") / "tiny.py"
    path.write_text(TINY_NET)
    return path


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(folder: Path, config: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return train(load_train_config(write_config(folder, config)), stream=io.StringIO(), **kwargs)


def rendered_config(net_file: Path, objective: str, args: dict[str, Any], *, epochs: int = 20,
                    **top: Any) -> dict[str, Any]:
    """The shipped dataset split by environment: courtyard renders train, sunrise renders test."""
    config: dict[str, Any] = {
        "seed": 0,
        "data": {"train": str(SHIPPED), "test": str(SHIPPED), "train_environments": ["courtyard"],
                 "test_environments": ["sunrise"], "cache": True},
        "model": {"file": str(net_file), "class": "Net", "args": {"side": 32}, "resolution": 32,
                  "normalization": NORMALIZATION},
        "training": {"epochs": epochs, "batch_size": 32, "lr": 0.003, "threads": 1, "device": "cpu",
                     "objective": objective, "objective_args": args, "augment": NO_AUGMENT},
        "output": "out",
        "card": {"robust_eval": {"enabled": True, "eps": EPS, "steps": 10, "restarts": 1, "ensemble": False}},
    }
    for key, value in top.items():
        merge = isinstance(value, dict) and key in config and key != "model"
        config[key] = {**config[key], **value} if merge else value
    return config


# -- the objectives themselves ---------------------------------------------------------------------
def test_objectives_stay_in_ball_and_box_and_trades_beta_zero_is_cross_entropy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 5))
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 5, (6,))
    for objective in (PGDTraining(eps=0.1, steps=3), FBFTraining(eps=0.1), FGSMTraining(eps=0.1)):
        adv = objective.adversarial(model, x, y)
        assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and 0 <= float(adv.min()) and float(adv.max()) <= 1
        assert float((adv - x).abs().max()) > 0.05
    ramped = PGDTraining(eps=0.1, steps=2, eps_ramp=0.5)
    ramped.set_progress(0.1)
    assert ramped.current_eps == pytest.approx(0.02)
    assert float((ramped.adversarial(model, x, y) - x).abs().max()) <= 0.02 + 1e-6
    ramped.set_progress(0.7)
    assert ramped.current_eps == pytest.approx(0.1)
    loss, logits = TRADESTraining(eps=0.1, beta=0.0)(model, x, y)
    assert torch.equal(loss, torch.nn.functional.cross_entropy(model(x), y)) and torch.equal(logits, model(x))
    # the same seed gives the same adversarial batch; reseeding moves the random start
    a, b = FBFTraining(eps=0.1), FBFTraining(eps=0.1)
    assert torch.equal(a.adversarial(model, x, y), b.adversarial(model, x, y))
    b.reseed(1)
    assert not torch.equal(a.adversarial(model, x, y), b.adversarial(model, x, y))
    # segmentation outputs: pixel-wise losses, the KL averaged over pixels
    seg = torch.nn.Conv2d(3, 2, 3, padding=1)
    masks = torch.randint(0, 2, (6, 8, 8))
    loss, logits = FBFTRADESTraining(eps=0.1, steps=2, beta=1.0)(seg, x, masks)
    assert logits.shape == (6, 2, 8, 8) and loss.ndim == 0 and torch.isfinite(loss)
    with torch.no_grad():
        p, q = seg(x), seg(torch.rand_like(x))
    per_pixel = (p.softmax(1) * (p.log_softmax(1) - q.log_softmax(1))).sum(1)
    assert float(kl_divergence(p, q)) == pytest.approx(float(per_pixel.mean()), rel=1e-5)


def test_bad_objective_args_name_the_key(tmp_path, net_file):
    config = rendered_config(net_file, "trades", {"eps": 3.0}, epochs=1)
    with pytest.raises(ConfigError, match="objective") as info:
        run(tmp_path, config)
    assert "training.objective_args" in str(info.value) and "eps" in str(info.value)


def test_segmentation_without_masks_is_one_clear_error(tmp_path, net_file):
    folder = tmp_path / "plain" / "cls"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    config = rendered_config(net_file, "cross_entropy", {}, epochs=1, task="segmentation",
                             data={"train": str(tmp_path / "plain"), "test": None, "train_environments": None,
                                   "test_environments": None})
    with pytest.raises(ConfigError) as info:
        run(tmp_path, config)
    assert info.value.key == "task" and str(tmp_path / "plain") in str(info.value)
    assert "mask" in str(info.value)


# -- catastrophic overfitting (MNIST) --------------------------------------------------------------
def _mnist(count: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.frombuffer(gzip.open(MNIST / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28)[start:start + count].copy(), labels[start:start + count].copy()


def _image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def mnist_runs(tmp_path_factory, net_file) -> dict[str, Any]:
    if not (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test set not found at {MNIST}")
    tmp = tmp_path_factory.mktemp("mnist")
    train_dir = _image_folder(tmp / "train", *_mnist(3000, 0))
    test_dir = _image_folder(tmp / "test", *_mnist(500, 9000))
    runs = {}
    for name, objective, early_stop in (("fgsm", "fgsm", False), ("fbf", "fbf", True)):
        folder = tmp / name
        folder.mkdir()
        config = {
            "seed": 0, "data": {"train": str(train_dir), "test": str(test_dir), "cache": True},
            "model": {"file": str(net_file), "class": "Net", "args": {"side": 28}, "resolution": 28},
            "training": {"epochs": 10, "batch_size": 64, "lr": 0.002, "weight_decay": 0.0, "threads": 1,
                         "device": "cpu", "objective": objective,
                         "objective_args": {"eps": 0.3, "eps_ramp": 0.4}, "augment": NO_AUGMENT,
                         "robust_check": {"steps": 10, "step_size": 0.075, "images": 100,
                                          "tolerance": 0.2, "early_stop": early_stop}},
            "output": "out",
            "card": {"robust_eval": {"steps": 20, "restarts": 1, "ensemble": False}},
        }
        card = run(folder, config)
        loaded = load_model(card["inference"], base_dir=folder / "out", device="cpu")
        model, preprocess = pixel_model(loaded)
        images, labels = _mnist(500, 9000)
        x = preprocess(np.repeat(images[..., None], 3, axis=-1))
        y = torch.tensor(labels, dtype=torch.long)
        adv = FGSM(eps=0.3)(model, x, y).adv
        with torch.no_grad():
            fgsm_acc = float((model(adv).argmax(1) == y).float().mean())
        runs[name] = {"card": card, "fgsm_accuracy": fgsm_acc}
        print(f"\nMNIST {name}: clean {card['metrics']['clean_accuracy']:.3f} FGSM {fgsm_acc:.3f} "
              f"PGD-20 {card['metrics']['robust_accuracy']:.3f} checks "
              f"{[round(h['robust_accuracy'], 3) for h in card['history']]} "
              f"stop {card['robustness']['robust_check']['early_stopped']}")
    return runs


def test_fgsm_training_overfits_catastrophically_fbf_does_not(mnist_runs):
    fgsm, fbf = mnist_runs["fgsm"], mnist_runs["fbf"]
    m = fgsm["card"]["metrics"]
    assert m["clean_accuracy"] > 0.85
    assert fgsm["fgsm_accuracy"] > 0.5              # the attack it trained on no longer works ...
    assert m["robust_accuracy"] < 0.08              # ... but PGD (20 steps, eps 0.3) breaks nearly all
    assert max(h["robust_accuracy"] for h in fgsm["card"]["history"]) < 0.1    # never robust on the way
    f = fbf["card"]["metrics"]
    assert f["robust_accuracy"] > 0.06 and f["robust_accuracy"] > m["robust_accuracy"] + 0.05   # 500 images
    check = fbf["card"]["robustness"]["robust_check"]
    assert check["eps"] == 0.3 and check["from"] == "test" and check["images"] == 100


# -- the robustness / accuracy trade-off on rendered data -------------------------------------------
@pytest.fixture(scope="module")
def rendered_runs(tmp_path_factory, net_file) -> dict[str, dict[str, Any]]:
    runs = {}
    ramp = {"eps": EPS, "eps_ramp": 0.5}
    for name, objective, args in (("standard", "cross_entropy", {}), ("pgd", "pgd", {**ramp, "steps": 3}),
                                  ("fbf", "fbf", ramp), ("trades", "trades", {**ramp, "steps": 3, "beta": 6.0})):
        folder = tmp_path_factory.mktemp(name)
        config = rendered_config(net_file, objective, args)
        if name == "pgd":   # the full card evaluation: PGD and the worst case of the ensemble
            config["card"]["robust_eval"].update(ensemble=True, apgd_steps=10, square_queries=50)
        runs[name] = run(folder, config)
        m = runs[name]["metrics"]
        print(f"\nrendered {name}: clean {m['clean_accuracy']:.3f} PGD-10 {m['robust_accuracy']:.3f} "
              f"worst {m['worst_case_accuracy']:.3f}")
    return runs


def test_adversarial_training_buys_robustness_on_rendered_data(rendered_runs):
    std = rendered_runs["standard"]["metrics"]
    assert std["clean_accuracy"] > 0.35                        # 11 classes: chance is 0.09
    assert std["robust_accuracy"] < 0.2
    for name in ("pgd", "fbf"):
        m = rendered_runs[name]["metrics"]
        assert m["robust_accuracy"] > std["robust_accuracy"] + 0.12, name
        assert m["clean_accuracy"] > 0.3, name
    ev = rendered_runs["pgd"]["robustness"]["evaluation"]
    assert ev["attacks"] == ["pgd-10x1", "apgd-ce", "apgd-t", "square"]
    assert ev["worst"] <= min(ev["per_attack"].values()) + 1e-9 and ev["worst"] <= ev["clean"]


def test_trades_beta_trades_clean_for_robust_accuracy(rendered_runs):
    # beta 0 is exactly cross-entropy training (see the first test): the standard run is its beta-0 end
    beta0, beta6 = rendered_runs["standard"]["metrics"], rendered_runs["trades"]["metrics"]
    assert beta6["robust_accuracy"] > beta0["robust_accuracy"] + 0.12
    assert beta6["clean_accuracy"] <= beta0["clean_accuracy"] + 0.08    # no clean gain beyond noise
    assert rendered_runs["trades"]["robustness"]["objective"]["beta"] == 6.0


# -- segmentation ----------------------------------------------------------------------------------
SEG_EPS = 24 / 255


def _object_removal_scores(card: dict[str, Any], folder: Path) -> dict[str, float]:
    """Mean segmentation scores on the test split under a targeted "make the object vanish" attack.

    The card's untargeted pixel-wise CE attack (PGD-50 x 3 and APGD-CE do no better) leaves a standard
    model F ~0.15-0.3: its unbounded CE keeps growing on background pixels already flipped to object
    instead of flipping the object. The targeted CE towards all-background (bounded below by 0, so
    flipped pixels stop pulling) removes the object, which is what drives F to 0.
    """
    model, preprocess = pixel_model(load_model(card["inference"], base_dir=folder / "out", device="cpu"))
    test = ImageDataset(SHIPPED, extras=True, passes=["mask"]).subset(environments=["sunrise"])
    x, y = stack(SegmentedImages(test, preprocess, None, "binary"), list(range(len(test))))
    attack = PGD(eps=SEG_EPS, steps=20, step_size=SEG_EPS / 2, schedule="cosine", targeted=True,
                 task=Segmentation(), seed=0)
    adv = attack(model, x, y, target=torch.zeros_like(y)).adv
    with torch.no_grad():
        scores = segmentation_scores(model(adv).argmax(1), y, 2)
    return {name: float(v.mean()) for name, v in scores.items()}


@pytest.fixture(scope="module")
def segmentation_runs(tmp_path_factory, net_file) -> dict[str, dict[str, Any]]:
    """A UNet (width 8, depth 2, 32 px) trained 8 epochs on courtyard renders, standard and
    ``fbf_trades`` at eps 24/255; evaluated on the sunrise renders at the same eps."""
    unet = {"module": "threedb.evaluators.architectures", "class": "UNet", "args": {"width": 8, "depth": 2},
            "resolution": 32, "normalization": NORMALIZATION}
    runs = {}
    for name, objective, args in (("standard", "cross_entropy", {}),
                                  ("fbf_trades", "fbf_trades", {"eps": SEG_EPS, "eps_ramp": 0.5, "steps": 2,
                                                                "beta": 6.0})):
        folder = tmp_path_factory.mktemp(name)
        config = rendered_config(net_file, objective, args, epochs=8, task="segmentation", model=unet,
                                 training={"lr": 0.01, "batch_size": 16},
                                 card={"robust_eval": {"enabled": True, "eps": SEG_EPS, "steps": 10,
                                                       "restarts": 1, "max_examples": 110, "ensemble": False}})
        card = run(folder, config)
        runs[name] = {"card": card, "removal": _object_removal_scores(card, folder)}
        m = card["metrics"]
        print(f"\nsegmentation {name}: clean {m['clean_scores']} card PGD-10 {m['adversarial_scores']} "
              f"object removal PGD-20 {runs[name]['removal']}")
    return runs


def test_fbf_trades_segmentation_keeps_its_f_measure_under_attack(segmentation_runs):
    std, robust = segmentation_runs["standard"]["card"], segmentation_runs["fbf_trades"]["card"]
    assert std["task"] == "segmentation" and [c["name"] for c in std["classes"]] == ["background", "object"]
    for card in (std, robust):
        scores = card["metrics"]["test_scores"]
        assert set(scores) == {"pixel_accuracy", "iou", "sbd", "f_measure"}
        assert card["metrics"]["test_accuracy"] == scores["pixel_accuracy"]
        assert scores["f_measure"] > 0.5                         # it learned to find the object
        assert card["robustness"]["evaluation"]["eps"] == SEG_EPS
    # seed 000's Table 1: a standard segmenter's adversarial F is ~0, FBF + TRADES keeps most of it
    std_adv, robust_adv = segmentation_runs["standard"]["removal"], segmentation_runs["fbf_trades"]["removal"]
    assert std_adv["f_measure"] <= 0.1 and std_adv["sbd"] <= 0.1
    assert robust_adv["f_measure"] >= 0.25 and robust_adv["f_measure"] >= 3 * std_adv["f_measure"]
    assert robust_adv["iou"] > std_adv["iou"] + 0.15
    # the card's worst case (lowest F over PGD-10 and object-removal PGD-10) agrees on the order
    std_card, robust_card = std["metrics"]["adversarial_scores"], robust["metrics"]["adversarial_scores"]
    assert std_card["f_measure"] < 0.5 * std["metrics"]["clean_scores"]["f_measure"]
    assert robust_card["f_measure"] > std_card["f_measure"] + 0.15
    assert robust_card["pixel_accuracy"] > std_card["pixel_accuracy"]


# -- resume ----------------------------------------------------------------------------------------
class _StopAfterEpoch1(io.StringIO):
    """Interrupts training right after epoch 1's checkpoint was written (as a kill would)."""

    def write(self, text: str) -> int:
        if "epoch 1/" in text:
            raise KeyboardInterrupt
        return super().write(text)


def test_resume_of_adversarial_training_is_exact_and_card_holds_robustness(tmp_path, net_file):
    config = rendered_config(net_file, "fbf", {"eps": EPS, "eps_ramp": 0.5}, epochs=4,
                             training={"robust_check": {"steps": 3, "images": 32, "tolerance": 0.0}})
    (tmp_path / "a").mkdir()
    reference = run(tmp_path / "a", config)
    folder = tmp_path / "b"
    folder.mkdir()
    with pytest.raises(KeyboardInterrupt):
        train(load_train_config(write_config(folder, config)), stream=_StopAfterEpoch1())
    assert torch.load(folder / "out" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train(load_train_config(folder / "train.yaml"), resume=True, stream=io.StringIO())
    a = torch.load(tmp_path / "a" / "out" / "model.pt", weights_only=True)
    b = torch.load(folder / "out" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"] == [{**h, "seconds": r["seconds"]} for h, r in zip(reference["history"],
                                                                                  resumed["history"])]
    card = json.loads((folder / "out" / "card.json").read_text())
    assert card["robustness"]["objective"]["name"] == "fbf" and card["robustness"]["objective"]["eps"] == EPS
    assert card["training"]["objective_args"]["eps"] == EPS
    assert 0 <= card["metrics"]["robust_accuracy"] <= card["metrics"]["clean_accuracy"] <= 1
    assert card["metrics"]["robust_eps"] == EPS
    # tolerance 0: the first drop of the PGD check stops training and restores the best epoch's weights
    stop = card["robustness"]["robust_check"]["early_stopped"]
    assert stop == reference["robustness"]["robust_check"]["early_stopped"]
    assert stop["best_epoch"] < stop["epoch"] and stop["robust_accuracy"] < stop["best_robust_accuracy"]
    assert [json.loads(line) for line in (folder / "out" / "log.jsonl").read_text().splitlines()][-1] == \
        {"early_stop": stop}
    markdown = (folder / "out" / "MODEL_CARD.md").read_text()
    assert "PGD-10 x 1 restarts" in markdown and "`fbf`" in markdown
