"""Adversarial training beside ART's trainers, on the same data, model, epochs and batch size.

Data: the shipped held-out renders (assets/datasets/quickstart_heldout), split in two halves by
index parity (train: even, test: odd), at ``--resolution`` px. Model: ``SmallResNet(width=--width)``
from the same initial weights for every trainer. Each pair is trained side by side in one run:

* ``threedb train`` objective ``pgd``   vs ART ``AdversarialTrainerMadryPGD``
* ``threedb train`` objective ``fbf``   vs ART ``AdversarialTrainerFBFPyTorch``
* ``threedb train`` objective ``trades`` vs ART ``AdversarialTrainerTRADESPyTorch``
* ``threedb train`` objective ``cross_entropy`` (the standard epoch the FBF epoch is compared to)

Both sides are evaluated by the same PGD (``--eval-steps`` steps, 1 restart) on the test half. It
prints clean and robust accuracy (with one binomial standard error) and wall time per trainer, and
the ratios the targets are stated in: robust accuracy >= ART's - 1 SE, wall time <= 1.0x ART's, and
an FBF epoch <= 2.2x a standard epoch (the paper: about 2x).

    python benchmarks/adv_training_peers.py [--epochs 10] [--eps 0.0157] [--resolution 32] [--width 16]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers.py)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"


def write_halves(work: Path) -> tuple[Path, Path, list[str]]:
    """Image-folder trees ``work/train`` (even indices) and ``work/test`` (odd) of the shipped dataset."""
    import shutil

    from threedb.evaluators.datasets import ImageDataset

    ds = ImageDataset(DATA, extras=False)
    for i, record in enumerate(ds.records):
        half = work / ("train" if i % 2 == 0 else "test") / f"{record.label:02d}_{ds.classes[record.label]}"
        half.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record.file, half / record.file.name)
    return work / "train", work / "test", list(ds.classes)


def arrays(root: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """[0, 1] float32 NCHW images at ``resolution`` and integer labels, in the reader's order."""
    from threedb.evaluators.datasets import ImageDataset
    from threedb.evaluators.preprocess import Preprocess

    ds = ImageDataset(root, extras=False)
    pre = Preprocess(None, None, (resolution, resolution))
    x = pre(torch.stack([ds[i][0] for i in range(len(ds))]).permute(0, 2, 3, 1))
    return x.numpy(), np.array([ds[i][1] for i in range(len(ds))])


def ours(train_dir: Path, test_dir: Path, work: Path, name: str, objective: str, args: dict, epochs: int,
         batch: int, lr: float, resolution: int, width: int, init: dict) -> tuple[nn.Module, float, float]:
    """Train with ``threedb train`` (no augmentation, constant AdamW); returns (model, seconds, s/epoch)."""
    import yaml

    from threedb.evaluators.training.config import load_train_config
    from threedb.evaluators.training.loop import train

    init_path = work / "init.pt"
    torch.save(init, init_path)
    # cache: decoded images stay in memory, as ART's arrays do
    config = {"seed": 0, "data": {"train": str(train_dir), "cache": True},
              "model": {"module": "threedb.evaluators.architectures", "class": "SmallResNet",
                        "args": {"width": width}, "resolution": resolution, "weights": str(init_path)},
              "training": {"epochs": epochs, "batch_size": batch, "optimizer": "adamw", "lr": lr,
                           "weight_decay": 0.0, "schedule": "constant", "objective": objective,
                           "objective_args": args, "device": "cpu",
                           "threads": torch.get_num_threads(),
                           "augment": {"crop_scale": [1.0, 1.0], "flip": False, "color_jitter": 0.0}},
              "card": {"robust_eval": {"enabled": False}}, "output": str(work / name)}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    train(load_train_config(path), stream=open("/dev/null", "w"))
    seconds = time.perf_counter() - start
    from threedb.evaluators.architectures import SmallResNet

    model = SmallResNet(num_classes=len(init["head.3.weight"]), width=width)
    model.load_state_dict(torch.load(work / name / "model.pt", weights_only=True))
    return model.eval(), seconds, seconds / epochs


def art_trainer(kind: str, model: nn.Module, x: np.ndarray, y: np.ndarray, k: int, eps: float, steps: int,
                epochs: int, batch: int, lr: float, beta: float) -> tuple[nn.Module, float]:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import (AdversarialTrainerFBFPyTorch, AdversarialTrainerMadryPGD,
                                      AdversarialTrainerTRADESPyTorch)
    from art.estimators.classification import PyTorchClassifier

    y = np.eye(k, dtype=np.float32)[y]       # one-hot: ART's FBF trainer needs it, the others accept it
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), optimizer=optimizer,
                            input_shape=x.shape[1:], nb_classes=k, clip_values=(0.0, 1.0))
    start = time.perf_counter()
    if kind == "pgd":
        AdversarialTrainerMadryPGD(clf, nb_epochs=epochs, batch_size=batch, eps=eps, eps_step=2.5 * eps / steps,
                                   max_iter=steps, num_random_init=1).fit(x, y)
    elif kind == "fbf":
        AdversarialTrainerFBFPyTorch(clf, eps=eps).fit(x, y, nb_epochs=epochs, batch_size=batch)
    else:
        attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=steps,
                                          num_random_init=1, verbose=False)
        AdversarialTrainerTRADESPyTorch(clf, attack, beta=beta).fit(x, y, nb_epochs=epochs, batch_size=batch)
    return model.eval(), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eps", type=float, default=4 / 255)
    parser.add_argument("--steps", type=int, default=5, help="PGD steps in training (pgd, trades)")
    parser.add_argument("--beta", type=float, default=6.0, help="TRADES beta")
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for every library (default 1: on a shared 2-core machine, 2 "
                             "OpenMP threads beside another busy process slow down many times over)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from threedb.evaluators.architectures import SmallResNet
    from threedb.robustness.attacks import PGD

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_dir, test_dir, classes = write_halves(work)
        k = len(classes)
        x_train, y_train = arrays(train_dir, args.resolution)
        x_test, y_test = arrays(test_dir, args.resolution)
        init = SmallResNet(num_classes=k, width=args.width).state_dict()
        xt, yt = torch.from_numpy(x_test), torch.from_numpy(y_test)

        def evaluate(model: nn.Module) -> tuple[float, float]:
            # gradient_check off: a trainer whose network died (constant output) is just not robust
            adv = PGD(eps=args.eps, steps=args.eval_steps, gradient_check=False)(model, xt, yt).adv
            return peers.robust_accuracy(model, xt, yt), peers.robust_accuracy(model, adv, yt)

        n = len(yt)
        print(f"{len(y_train)} training / {n} test renders at {args.resolution} px, SmallResNet(width={args.width}), "
              f"{args.epochs} epochs, batch {args.batch}, AdamW lr {args.lr}, eps {args.eps:.4f}; "
              f"robust accuracy: PGD-{args.eval_steps}")
        m_std, std_seconds, std_epoch = ours(train_dir, test_dir, work, "standard", "cross_entropy", {}, args.epochs,
                                             args.batch, args.lr, args.resolution, args.width, init)
        c_s, r_s = evaluate(m_std)
        print(f"standard training: clean {c_s:.3f}, robust {r_s:.3f}, {std_epoch:.2f} s per epoch")
        obj_args = {"pgd": {"eps": args.eps, "steps": args.steps, "step_size": 2.5 * args.eps / args.steps},
                    "fbf": {"eps": args.eps},
                    "trades": {"eps": args.eps, "steps": args.steps, "step_size": args.eps / 4, "beta": args.beta}}
        met = []
        print(f"{'objective':<8} {'trainer':<8} {'clean':>6} {'robust':>7} {'+-SE':>5} {'seconds':>8}  verdicts")
        for kind, oargs in obj_args.items():
            m_ours, s_ours, epoch_ours = ours(train_dir, test_dir, work, kind, kind, oargs, args.epochs, args.batch,
                                              args.lr, args.resolution, args.width, init)
            base = SmallResNet(num_classes=k, width=args.width)
            base.load_state_dict(copy.deepcopy(init))
            m_art, s_art = art_trainer(kind, base, x_train, y_train, k, args.eps, args.steps, args.epochs,
                                       args.batch, args.lr, args.beta)
            (c_o, r_o), (c_a, r_a) = evaluate(m_ours), evaluate(m_art)
            se = peers.standard_error(r_a, n)
            ok_strength, ok_time = r_o >= r_a - se, s_ours <= s_art
            met += [ok_strength, ok_time]
            print(f"{kind:<8} {'threedb':<8} {c_o:>6.3f} {r_o:>7.3f} {peers.standard_error(r_o, n):>5.3f} {s_ours:>8.1f}"
                  f"  robust >= ART - SE: {'yes' if ok_strength else 'NO'}; time ratio {s_ours / s_art:.2f}x (<= 1.0)")
            print(f"{'':<8} {'ART':<8} {c_a:>6.3f} {r_a:>7.3f} {se:>5.3f} {s_art:>8.1f}")
            if kind == "fbf":
                ratio = epoch_ours / std_epoch
                met.append(ratio <= 2.2)
                print(f"{'':<8} FBF epoch / standard epoch: {ratio:.2f}x (<= 2.2; paper ~2x)")
        print(f"targets met: {sum(met)}/{len(met)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
