"""IDX files (threedb.evaluators.datasets.idx) and `threedb dataset from-idx`: the real MNIST test files
from ../shared/data/mnist, written as a threedb dataset that ImageDataset and `threedb train` read;
and a tiny real `threedb train` run with the relu_stability objective and pruning on those images."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from threedb.evaluators.datasets import DatasetError, ImageDataset, read_idx, write_idx_dataset
from threedb.sim.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
IMAGES, LABELS = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
needs_mnist = pytest.mark.skipif(not IMAGES.exists(), reason=f"MNIST test files not found in {MNIST}")


def write_raw_idx(path: Path, array: np.ndarray, code: int, *, compress: bool = False) -> Path:
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@needs_mnist
def test_read_idx_reads_the_mnist_test_files():
    images, labels = read_idx(IMAGES), read_idx(LABELS)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.max() == 255 and images[0, :4].max() == 0          # black border rows


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D),
                                        (np.float64, 0x0E)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, dtype, code, compress):
    array = (np.arange(24).reshape(2, 3, 4) * (-1 if dtype not in (np.uint8,) else 1)).astype(dtype)
    got = read_idx(write_raw_idx(tmp_path / "a.idx", array, code, compress=compress))
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, array)


def test_broken_idx_files_are_one_error_naming_the_file(tmp_path):
    good = write_raw_idx(tmp_path / "good", np.zeros((2, 3), np.uint8), 0x08)
    cases = {"short": good.read_bytes()[:-1], "magic": b"\x01" + good.read_bytes()[1:],
             "type": b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"x", "gz": b"\x1f\x8b" + b"garbage"}
    messages = {"short": "holds 5 bytes", "magic": "not an IDX file", "type": "unknown IDX data type 0x07",
                "gz": "corrupt gzip"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=messages[name]) as info:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(DatasetError, match="missing IDX file"):
        read_idx(tmp_path / "nope")


@needs_mnist
def test_from_idx_writes_a_dataset_that_image_dataset_reads(tmp_path, capsys):
    out = tmp_path / "heldout"
    assert main(["dataset", "from-idx", str(IMAGES), str(LABELS), "--out", str(out), "--range", "9990:10000"]) == 0
    assert "wrote 10 samples (IDX indices 9990..9999)" in capsys.readouterr().out
    ds = ImageDataset(out)
    assert ds.classes == [str(i) for i in range(10)] and len(ds) == 10
    images, labels = read_idx(IMAGES), read_idx(LABELS)
    for i in range(len(ds)):
        image, label, target = ds[i]
        index = int(target["id"])
        assert 9990 <= index < 10000 and label == labels[index]
        assert image.shape == (3, 28, 28) and all(np.array_equal(image[c].numpy(), images[index]) for c in range(3))
    header = json.loads((out / "dataset.json").read_text())
    assert header["source"]["range"] == [9990, 10000] and header["source"]["idx_images"] == IMAGES.name
    # every class keeps its folder (and label), also one without samples in the range
    assert sorted(p.name for p in (out / "images").iterdir()) == [str(i) for i in range(10)]


@needs_mnist
def test_from_idx_refuses_bad_ranges_and_used_folders(tmp_path, capsys):
    argv = ["dataset", "from-idx", str(IMAGES), str(LABELS), "--out", str(tmp_path / "d")]
    assert main([*argv, "--range", "9990:10001"]) == 2
    assert main([*argv, "--range", "5:5"]) == 2
    assert main([*argv, "--range", "a:b"]) == 2
    assert main(["dataset", "from-idx", str(LABELS), str(LABELS), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "0:10000" in err and "START:STOP" in err and "expected N x H x W uint8 images" in err
    assert main([*argv, "--range", "0:3"]) == 0
    assert main([*argv, "--range", "3:6"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="label 7 is outside the 3 classes"):
        write_idx_dataset(IMAGES, LABELS, tmp_path / "f", start=0, stop=1, classes=["a", "b", "c"])


# ------------------------------------------------------------------ a tiny real `threedb train` run

@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> Path:
    if not IMAGES.exists():
        pytest.skip(f"MNIST test files not found in {MNIST}")
    root = tmp_path_factory.mktemp("tiny-mnist")
    write_idx_dataset(IMAGES, LABELS, root / "train", start=0, stop=200)
    write_idx_dataset(IMAGES, LABELS, root / "test", start=9950, stop=10000)
    return root


def train_tiny(root: Path, name: str, **objective_args) -> dict:
    from threedb.evaluators.training.config import load_train_config
    from threedb.evaluators.training.loop import train

    config = {
        "seed": 0, "data": {"train": "train", "test": "test", "cache": True},
        "model": {"module": "threedb.evaluators.architectures", "class": "MnistCNN",
                  "args": {"channels": [4, 8], "hidden": 16}, "resolution": 28},
        "training": {"epochs": 1, "batch_size": 50, "lr": 0.01, "weight_decay": 0.0, "schedule": "constant",
                     "objective": "relu_stability",
                     "objective_args": {"eps": 0.1, "steps": 2, "rs_mode": "naive", **objective_args},
                     "augment": {"crop_scale": [1.0, 1.0], "flip": False, "color_jitter": 0.0},
                     "prune": {"weights": 1e-3, "relus": 0.1}},
        "output": name,
        "card": {"robust_eval": {"steps": 3, "restarts": 1, "ensemble": False}},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return train(load_train_config(path), stream=io.StringIO())


def test_tiny_relu_stability_training_reports_unstable_relus_and_rs_reduces_them(tiny_mnist):
    """One epoch (4 steps) on 200 MNIST images: the card reports unstable ReLUs per layer (naive and
    improved, on the 50 test images) and the pruning; the RS loss (weight 0.01) leaves far fewer
    unstable ReLUs than the same run without it (about 40% fewer; asserted: at least 20%)."""
    card = train_tiny(tiny_mnist, "rs", rs_weight=0.01)
    plain = train_tiny(tiny_mnist, "plain", rs_weight=0.0)
    st = card["robustness"]["relu_stability"]
    assert st["eps"] == 0.1 and st["examples"] == 50 and st["from"] == "test"
    assert st["neurons"] == [4 * 14 * 14, 8 * 7 * 7, 16] and len(st["layers"]) == 3
    for mode in ("naive", "improved"):
        assert len(st[mode]["per_layer"]) == 3 and st[mode]["total"] == pytest.approx(sum(st[mode]["per_layer"]))
    assert all(i <= n + 1e-9 for i, n in zip(st["improved"]["per_layer"], st["naive"]["per_layer"]))
    assert card["metrics"]["unstable_relus"]["naive"] == st["naive"]["total"]
    assert set(card["history"][0]) >= {"rs_loss", "train_unstable"}
    pruning = card["robustness"]["pruning"]
    assert pruning["weights"]["weights"] == 4 * 16 + 8 * 4 * 16 + 16 * 392 + 16 * 10
    assert len(pruning["relus"]["layers"]) == 3
    markdown = (tiny_mnist / "rs" / "MODEL_CARD.md").read_text()
    assert "Unstable ReLUs (L-inf eps 0.1" in markdown and "Pruning after training" in markdown
    assert st["naive"]["total"] < 0.8 * plain["robustness"]["relu_stability"]["naive"]["total"]
    assert "rs_loss" not in plain["history"][0]


def test_unusable_stability_configs_fail_before_training(tiny_mnist):
    from threedb.evaluators.training.config import load_train_config
    from threedb.evaluators.training.loop import train
    from threedb.sim.errors import ConfigError

    base = {"data": {"train": "train"}, "output": "never",
            "model": {"module": "threedb.evaluators.architectures", "class": "SmallResNet", "args": {"width": 4},
                      "resolution": 32},
            "training": {"epochs": 1, "objective": "relu_stability", "objective_args": {"eps": 0.1}}}
    path = tiny_mnist / "bad.yaml"
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match=r"training.objective: SmallResNet: unsupported layer SmallResNet at position 0") as info:
        train(load_train_config(path), stream=io.StringIO())
    assert str(path) in str(info.value)
    base["model"] = {"module": "threedb.evaluators.architectures", "class": "MnistMLP", "resolution": 28}
    base["training"] = {"epochs": 1, "objective": "cross_entropy", "prune": {"weights": 1e-3}}
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match="card.relu_stability.eps: card.relu_stability needs an eps"):
        train(load_train_config(path), stream=io.StringIO())
    assert not (tiny_mnist / "never" / "checkpoint.pt").exists()
