"""configs/resnet18_imagenet.yaml and assets/imagenet/: the ImageNet label files, the config's loading
path with a local weights file (a ResNet-18 state dict the test writes, as a user's downloaded file
would be), a prediction matching a plain torchvision forward pass, and one real `threedb run` of it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from threedb.evaluators.base import load_evaluator
from threedb.evaluators.models import load_model
from threedb.sim.config import load_config
from threedb.sim.errors import ConfigError
from threedb.sim.store import read_rows

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "resnet18_imagenet.yaml"
LABELS = REPO / "assets" / "imagenet" / "imagenet_classes.json"
CLASSMAP = REPO / "assets" / "imagenet" / "classmap.json"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """An untrained ResNet-18's state dict: the file format of torchvision's downloaded weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def synthetic_image(seed: int = 0) -> np.ndarray:
    """A 224 x 224 RGB image: a smooth gradient with a bright disc (uint8 HxWx3)."""
    yy, xx = np.mgrid[:224, :224] / 223.0
    image = np.stack([xx, yy, 1 - xx * yy], -1) * 200
    image[(yy - 0.5) ** 2 + (xx - 0.4) ** 2 < 0.05] = (240, 230, 40)
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def reference_logits(weights: Path, image: np.ndarray) -> torch.Tensor:
    """torchvision's ResNet-18 on ``image``, normalised by hand (no threedb code)."""
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.inference_mode():
        return model.eval()(x)


def test_label_files():
    names = json.loads(LABELS.read_text())
    assert len(names) == 1000 and names[504] == "coffee mug"
    assert names == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    classmap = json.loads(CLASSMAP.read_text())
    named = {uid: {names[i] for i in indices} for uid, indices in classmap.items()}
    assert named == {"mug": {"coffee mug", "cup"}, "teddy": {"teddy"}, "soccer_ball": {"soccer ball"},
                     "bunny": {"wood rabbit", "hare", "Angora"}, "tray": {"tray"}}
    # the experiment renders exactly the objects the class map covers
    assert set(load_config(CONFIG).assets.objects) == set(classmap)


def test_config_loads_the_local_weights_and_predicts(weights):
    exp = load_config(CONFIG, overrides={"inference.weights": str(weights)})
    assert Path(exp.inference["weights"]) == weights
    assert exp.render.resolution == (224, 224)
    model = load_model(exp.inference, base_dir=exp.source.parent, file=exp.source, device="cpu")
    assert model.num_classes == 1000 and model.class_names[504] == "coffee mug"
    saved = torch.load(weights, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.model.state_dict().items())

    evaluator = load_evaluator(exp.evaluation, base_dir=exp.source.parent, file=exp.source)
    evaluator.check_objects(list(exp.assets.objects))        # every object is in the class map
    evaluator.setup(model)                                   # indices within the 1000 outputs
    image = synthetic_image()
    logits = model.predict(image[None])
    assert logits.shape == (1, 1000)
    reference = reference_logits(weights, image)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
    [row] = evaluator.evaluate(logits, [{"object_uid": "mug"}])
    assert row["prediction"] == [int(reference.argmax())]
    assert row["is_correct"] == (row["prediction"][0] in (504, 968))
    assert row["loss"] == pytest.approx(float(-torch.log_softmax(reference, 1)[0, [504, 968]].mean()), rel=1e-4)


def test_missing_weights_file_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))                # a user who has not downloaded them yet
    exp = load_config(CONFIG)
    expected = tmp_path / ".cache" / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert Path(exp.inference["weights"]) == expected
    with pytest.raises(ConfigError) as info:
        load_model(exp.inference, base_dir=exp.source.parent, file=exp.source, device="cpu")
    assert info.value.key == "inference.weights" and str(expected) in str(info.value)


def test_threedb_run_end_to_end(weights, tmp_path):
    """One 224 px render of the mug (1 sample per pixel) through the whole run pipeline."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "threedb.sim.cli", "run", str(CONFIG), "--out", str(out), "--render-workers", "1",
         "--device", "cpu", "--set", f"inference.weights={weights}", "--set", "policy.samples=1",
         "--set", "assets.objects=[mug]", "--set", "assets.environments=[studio]", "--set", "render.samples=1"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = list(read_rows(out))
    assert row["status"] == "ok" and row["object_uid"] == "mug"
    assert json.loads((out / "class_maps.json").read_text()) == json.loads(LABELS.read_text())
    # the logged prediction is what the model says on the logged render
    with Image.open(out / "images" / f"{row['id']}_rgb.png") as img:
        render = np.array(img.convert("RGB"))
    assert render.shape == (224, 224, 3)
    reference = reference_logits(weights, render)
    assert row["prediction"] == [int(reference.argmax())]
    assert row["is_correct"] == (row["prediction"][0] in (504, 968))
    assert row["loss"] == pytest.approx(float(-torch.log_softmax(reference, 1)[0, [504, 968]].mean()), rel=1e-3)
