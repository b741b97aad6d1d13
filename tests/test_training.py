"""``threedb train``: a tiny real training run (SmallResNet width 4, 32 px, 3 epochs on synthetic shape
images) learns, is reproducible under its seed, resumes after a real kill to the same weights, refuses
bad checkpoints and configs with one clear error, writes a model card that matches its weights, and
its exported model loads through the run pipeline's loader with the same predictions.

Datasets: two classes told apart by shape and colour (a red disc, a blue square) on noise. The main
one is a real exported dataset (``export_run`` of a RunStore-written run directory whose objects are
``teddy`` and ``soccer_ball``, so uids and catalog names differ); the reproducibility test reads an
image-folder tree.
"""
from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from threedb.evaluators.classification import ClassificationEvaluator
from threedb.evaluators.datasets import ImageDataset, export_run
from threedb.evaluators.models import load_model
from threedb.evaluators.training.card import CardError, sha256_file, verify_card
from threedb.evaluators.training.config import load_train_config
from threedb.evaluators.training.loop import TrainingError, train
from threedb.sim.cli import main
from threedb.sim.config import parse_override
from threedb.sim.errors import ConfigError
from threedb.sim.store import RunStore

SIZE = 24                                   # image side (px); the model sees 32 px
CLASSES = ["teddy", "soccer_ball"]          # label order given to the export (not sorted on purpose)
SHAPES = {"teddy": "disc", "soccer_ball": "square", "disc": "disc", "square": "square"}
DATA_COMMAND = "threedb dataset export runs/shapes --out data/shapes --classes teddy,soccer_ball"


# -- synthetic data --------------------------------------------------------------------------------
def shape_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A red disc or a blue square of random size and place on dark noise (HxWx3 uint8)."""
    image = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
    cy, cx = rng.integers(8, SIZE - 8, 2)
    r = int(rng.integers(4, 7))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if kind == "disc":
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (230, 60, 40)
    else:
        image[(abs(yy - cy) <= r) & (abs(xx - cx) <= r)] = (40, 80, 230)
    return image


def image_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("disc", "square"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(shape_image(cls, rng)).save(root / cls / f"{i:03d}.png")
    return root


def exported_dataset(tmp: Path, per_class: int, seed: int) -> Path:
    """A run directory written by RunStore (render-only rows with RGB images), exported as a dataset."""
    rng = np.random.default_rng(seed)
    run_dir = tmp / "run"
    with RunStore(run_dir, output_keys=(), output_type="classes", class_names=[],
                  config={"assets": {"root": "default"}}, seed=seed, command=["test"]) as store:
        for uid in CLASSES:
            for i in range(per_class):
                env = ("city", "studio")[i % 2]
                job = {"id": f"{env}-{uid}-{i:03d}", "seed": i,
                       "object": {"uid": uid, "path": f"/assets/{uid}.obj"},
                       "environment": {"name": env, "path": f"/assets/{env}.exr", "kind": "hdri"},
                       "controls": [{"name": "orientation", "ref": "x:Orientation",
                                     "values": {"rotation_z": float(i)}}]}
                store.write(job, {}, rgb=shape_image(SHAPES[uid], rng))
    export_run(run_dir, tmp / "data", classes=CLASSES)
    return tmp / "data"


def write_config(folder: Path, train_dir: Path, test_dir: Path | None, *, name: str = "train.yaml",
                 **top: Any) -> Path:
    config: dict[str, Any] = {
        "seed": 0,
        "data": {"train": str(train_dir), **({"test": str(test_dir)} if test_dir else {})},
        "model": {"module": "threedb.evaluators.architectures", "class": "SmallResNet", "args": {"width": 4},
                  "resolution": 32, "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        "training": {"epochs": 3, "batch_size": 8, "lr": 0.01, "threads": 1, "device": "cpu",
                     "augment": {"crop_scale": [0.8, 1.0], "flip": True, "color_jitter": 0.1}},
        "output": "out",
        "card": {"name": "shapes", "data_commands": [DATA_COMMAND]},
        **top,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def log_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[tuple[int, float, float]]:
    return [(r["epoch"], r["loss"], r["train_accuracy"]) for r in log_lines(out)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert list(wa) == list(wb)
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"tensors differ: {different[:5]}"


def run_train(config: Path, *extra: str) -> dict[str, Any]:
    """train() in-process with the CLI's config loading (quiet)."""
    return train(load_train_config(config, overrides=dict(parse_override(item) for item in extra)),
                 stream=io.StringIO())


@pytest.fixture(scope="module", autouse=True)
def _keep_torch_threads():
    """The configs pin one torch thread (same results in and out of process); restore the default."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("shapes")
    return {"train": exported_dataset(tmp / "train", 24, seed=0),
            "test": exported_dataset(tmp / "test", 10, seed=1)}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict[str, Any]:
    """One uninterrupted 3-epoch run, exported: the reference the other tests compare against."""
    folder = tmp_path_factory.mktemp("trained")
    config = write_config(folder, data["train"], data["test"], export="exported")
    card = run_train(config)
    return {"config": config, "out": folder / "out", "export": folder / "exported", "card": card}


def copy_output(trained: dict[str, Any], tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(trained["out"], out)
    return out


# -- learning ----------------------------------------------------------------------------------------
def test_tiny_run_learns(trained):
    log = log_lines(trained["out"])
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[-1]["loss"] < log[0]["loss"]
    metrics = trained["card"]["metrics"]
    assert metrics["test_images"] == 20
    assert metrics["test_accuracy"] > 0.75                     # chance is 0.5
    assert metrics["test_accuracy"] == log[-1]["test_accuracy"]
    assert sum(map(sum, metrics["test_confusion"])) == 20
    assert [h["loss"] for h in trained["card"]["history"]] == [r["loss"] for r in log]


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    folder = image_folder(tmp_path / "train", 16, seed=3)
    config = write_config(tmp_path, folder, None)
    outs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_train(config, f"output={tmp_path / name}", f"seed={seed}")
        outs[name] = tmp_path / name
    assert_same_weights(outs["a"] / "model.pt", outs["b"] / "model.pt")
    assert losses(outs["a"]) == losses(outs["b"])
    wa, wc = weights(outs["a"] / "model.pt"), weights(outs["c"] / "model.pt")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert losses(outs["a"]) != losses(outs["c"])


# -- resume --------------------------------------------------------------------------------------
KILL_AFTER_EPOCH_1 = textwrap.dedent("""
    import io, os, signal, sys
    from threedb.evaluators.training.config import load_train_config
    from threedb.evaluators.training.loop import train

    class KillAfterEpoch1(io.StringIO):
        # The loop prints "epoch 1/3: ..." right after it saved that epoch's checkpoint: die there,
        # as a kill -9 would (no cleanup, no exception handling).
        def write(self, text):
            if "epoch 1/3:" in text:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().write(text)

    train(load_train_config(sys.argv[1], overrides={"output": sys.argv[2]}), stream=KillAfterEpoch1())
""")


def test_resume_after_kill_equals_uninterrupted_run(trained, tmp_path, capsys):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_EPOCH_1, str(trained["config"]), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "model.pt").exists() and len(log_lines(out)) == 1
    # what a kill between epoch 2's log line and its checkpoint leaves: the resumed run redoes epoch 2
    with (out / "log.jsonl").open("a") as log:
        log.write(json.dumps({**log_lines(out)[0], "epoch": 2}) + "\n")

    assert main(["train", str(trained["config"]), "--resume", "--set", f"output={out}",
                 "--set", f"export={tmp_path / 'exported'}"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert_same_weights(out / "model.pt", trained["out"] / "model.pt")
    assert losses(out) == losses(trained["out"])            # epochs 1, 2, 3 once each
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["test_accuracy"] == trained["card"]["metrics"]["test_accuracy"]
    assert card["weights"]["sha256"] == trained["card"]["weights"]["sha256"]


# -- refusals --------------------------------------------------------------------------------------
def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines


def test_existing_checkpoint_without_resume_is_refused(trained, tmp_path, capsys):
    out = copy_output(trained, tmp_path)
    before = sha256_file(out / "checkpoint.pt")
    assert main(["train", str(trained["config"]), "--set", f"output={out}"]) == 2
    [line] = error_lines(capsys)
    assert str(out / "checkpoint.pt") in line and "--resume" in line
    assert sha256_file(out / "checkpoint.pt") == before


def test_truncated_checkpoint_is_one_error_line(trained, tmp_path):
    out = copy_output(trained, tmp_path)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    proc = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "train", str(trained["config"]),
                           "--resume", "--set", f"output={out}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert str(ckpt) in line and "corrupt or unreadable checkpoint" in line


@pytest.mark.parametrize("content", ["garbage", "not-a-checkpoint"])
def test_bad_checkpoint_with_resume_is_one_error_line(trained, tmp_path, capsys, content):
    out = copy_output(trained, tmp_path)
    ckpt = out / "checkpoint.pt"
    if content == "garbage":
        ckpt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        expected = "corrupt or unreadable checkpoint"
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)        # a readable torch file, not a checkpoint
        expected = "not a threedb training checkpoint"
    assert main(["train", str(trained["config"]), "--resume", "--set", f"output={out}"]) == 2
    [line] = error_lines(capsys)
    assert str(ckpt) in line and expected in line


def test_checkpoint_of_another_config_is_refused(trained, tmp_path):
    out = copy_output(trained, tmp_path)
    config = load_train_config(trained["config"], overrides={"output": str(out), "training.lr": 0.02})
    with pytest.raises(TrainingError, match="different training config") as info:
        train(config, resume=True, stream=io.StringIO())
    assert str(out / "checkpoint.pt") in str(info.value)
    # output and export are not part of the digest: the same config elsewhere resumes
    same = load_train_config(trained["config"], overrides={"output": str(out), "export": str(tmp_path / "e")})
    assert train(same, resume=True, stream=io.StringIO())["weights"]["sha256"] == \
        trained["card"]["weights"]["sha256"]


@pytest.mark.parametrize("edit, key", [
    ({"training": {"epoch": 3}}, "training.epoch"),                       # unknown key
    ({"training": {"optimizer": "adam"}}, "training.optimizer"),          # bad choice
    ({"training": {"epochs": 0}}, "training.epochs"),                     # out of range
    ({"training": {"augment": {"crop_scale": [0.9, 0.5]}}}, "training.augment.crop_scale"),
    ({"colour": "red"}, "colour"),                                         # unknown top-level key
])
def test_bad_training_config_names_file_and_key(tmp_path, edit, key):
    data = yaml.safe_load(write_config(tmp_path, tmp_path, None).read_text())
    for top, value in edit.items():
        data[top] = {**data[top], **value} if isinstance(value, dict) and top in data else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert info.value.file == str(path) and info.value.key == key
    assert str(path) in str(info.value) and key in str(info.value)


def test_bad_config_via_cli_and_bad_objective(tmp_path, capsys):
    path = write_config(tmp_path, tmp_path, None)
    assert main(["train", str(path), "--set", "training.batch_size=-4"]) == 2
    [line] = error_lines(capsys)
    assert "<command line>" in line and "training.batch_size" in line and "-4" in line
    folder = image_folder(tmp_path / "data", 2, seed=0)
    path = write_config(tmp_path, folder, None, name="objective.yaml")
    assert main(["train", str(path), "--set", "training.objective=hinge"]) == 2
    [line] = error_lines(capsys)
    assert str(path) in line and "training.objective" in line and "hinge" in line


def test_unusable_datasets_are_refused(data, tmp_path, capsys):
    path = write_config(tmp_path, tmp_path / "missing", None)
    assert main(["train", str(path)]) == 2
    [line] = error_lines(capsys)
    assert str(path) in line and "data.train" in line and str(tmp_path / "missing") in line
    other = image_folder(tmp_path / "other", 2, seed=0)          # classes disc, square
    path = write_config(tmp_path, data["train"], other, name="mismatch.yaml")
    with pytest.raises(TrainingError, match="differ") as info:
        run_train(path, f"output={tmp_path / 'out'}")
    assert str(other) in str(info.value)


# -- the model card and the export ----------------------------------------------------------------
def test_model_card_matches_weights_and_data(trained):
    out, card = trained["out"], trained["card"]
    assert verify_card(out) == card == json.loads((out / "card.json").read_text())
    assert card["weights"]["sha256"] == sha256_file(out / "model.pt")
    header = json.loads((Path(card["data"]["train"]["path"]) / "dataset.json").read_text())
    expected = [{"index": c["index"], "uid": c["uid"], "name": c["name"]} for c in header["classes"]]
    assert expected == [{"index": 0, "uid": "teddy", "name": "teddy bear"},
                        {"index": 1, "uid": "soccer_ball", "name": "soccer ball"}]
    assert card["classes"] == expected
    assert json.loads((out / "classes.json").read_text()) == ["teddy bear", "soccer ball"]
    assert json.loads((out / "classmap.json").read_text()) == {"teddy": 0, "soccer_ball": 1}
    assert card["data"]["train"]["images"] == 48 and card["data"]["test"]["images"] == 20
    assert card["data"]["train"]["environments"] == ["city.exr", "studio.exr"]
    assert card["inference"]["weights"] == "model.pt" and card["inference"]["num_classes"] == 2
    assert card["training"]["seed"] == 0 and card["training"]["epochs"] == 3
    markdown = (out / "MODEL_CARD.md").read_text()
    reproduce = markdown.split("## Reproduce", 1)[1]
    assert f"threedb train {trained['config']}" in reproduce and DATA_COMMAND in reproduce
    assert card["reproduce"] == [DATA_COMMAND, f"threedb train {trained['config']}"]
    assert f"{100 * card['metrics']['test_accuracy']:.1f}%" in markdown


def test_export_copies_the_model_and_card(trained):
    for name in ("model.pt", "card.json", "MODEL_CARD.md", "classes.json", "classmap.json"):
        assert (trained["export"] / name).read_bytes() == (trained["out"] / name).read_bytes(), name
    assert not (trained["export"] / "checkpoint.pt").exists()
    assert verify_card(trained["export"])["weights"]["sha256"] == trained["card"]["weights"]["sha256"]


def test_verify_card_refuses_altered_weights(trained, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained["export"], folder)
    state = weights(folder / "model.pt")
    first = next(iter(state))
    state[first] = state[first] + 1e-3
    torch.save(state, folder / "model.pt")
    with pytest.raises(CardError, match="does not match") as info:
        verify_card(folder)
    assert str(folder / "model.pt") in str(info.value)
    (folder / "model.pt").unlink()
    with pytest.raises(CardError, match="missing"):
        verify_card(folder)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(CardError, match="card.json"):
        verify_card(folder)


# -- the run pipeline's loader -------------------------------------------------------------------------
def test_exported_model_predicts_like_training_evaluation(trained, data):
    card = json.loads((trained["export"] / "card.json").read_text())
    loaded = load_model(card["inference"], base_dir=trained["export"], device="cpu")
    assert loaded.class_names == ["teddy bear", "soccer ball"]
    test = ImageDataset(data["test"], extras=False)
    images = np.stack([test[i][0].permute(1, 2, 0).numpy() for i in range(len(test))])   # HxWx3 uint8
    labels = [int(test[i][1]) for i in range(len(test))]
    logits = loaded.predict(images)
    predictions = logits.argmax(1).tolist()
    confusion = [[0, 0], [0, 0]]
    for label, pred in zip(labels, predictions):
        confusion[label][pred] += 1
    assert confusion == card["metrics"]["test_confusion"]
    accuracy = sum(p == t for p, t in zip(predictions, labels)) / len(labels)
    assert accuracy == card["metrics"]["test_accuracy"]
    # the run pipeline's classification evaluator agrees, through the exported classmap.json
    evaluator = ClassificationEvaluator(classmap_path=trained["export"] / "classmap.json")
    evaluator.setup(loaded)
    rows = evaluator.evaluate(logits, [{"object_uid": test.class_uids[label]} for label in labels])
    assert [r["is_correct"] for r in rows] == [p == t for p, t in zip(predictions, labels)]
