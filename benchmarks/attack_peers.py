"""Our attacks against torchattacks' and ART's on the same model, images, eps, steps and restarts.

The shipped quickstart model (its normalisation inside the model, inputs in [0, 1]) on the first
``--images`` images of the shipped held-out dataset (assets/datasets/quickstart_heldout). For each
attack (PGD, APGD-CE, APGD-DLR, Square) it prints robust accuracy with one binomial standard error
and images/s of threedb and of each peer, measured side by side in one run (median of ``--repeats``),
and the ratios the targets are stated in:

* strength: threedb's robust accuracy <= the peer's + 1 standard error;
* speed: images/s >= 1.0x torchattacks' and >= 1.5x ART's.

    python benchmarks/attack_peers.py [--images 128] [--eps 0.0078] [--steps 10] [--queries 300]
                                      [--repeats 3] [--device auto|cpu|cuda] [--only pgd apgd-ce ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers.py)

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "assets" / "models" / "quickstart"
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"


def load(device: str, images: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, int]:
    """The quickstart model as a function of [0, 1] images, and ``images`` (x, y) spread over the classes."""
    from threedb.evaluators.datasets import ImageDataset
    from threedb.evaluators.models import load_model
    from threedb.evaluators.pixel_space import pixel_model

    spec = json.loads((MODEL_DIR / "card.json").read_text())["inference"]
    model, pre = pixel_model(load_model(spec, base_dir=MODEL_DIR, device=device))
    ds = ImageDataset(DATA, extras=False)
    step = max(1, len(ds) // images)
    items = [ds[i] for i in range(0, len(ds), step)][:images]
    x = pre(torch.stack([img for img, _ in items]).permute(0, 2, 3, 1)).to(device)
    y = torch.tensor([label for _, label in items], device=device)
    return model, x, y, len(json.loads((MODEL_DIR / spec["label_map"]).read_text()))


def timed(run: Callable[[], torch.Tensor], device: str) -> tuple[torch.Tensor, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    adv = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return adv, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--eps", type=float, default=2 / 255)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", help="attack names to run (default all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for every library (default 1: on a shared 2-core machine, 2 "
                             "OpenMP threads beside another busy process slow down many times over)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    from threedb.robustness import attacks as ours

    model, x, y, k = load(device, args.images)
    n, eps, steps, bs = len(y), args.eps, args.steps, len(y)
    alpha = 2.5 * eps / steps
    # name -> {library: (runner(model, x, y) -> adv)}
    suites: dict[str, dict[str, Callable[[], torch.Tensor]]] = {
        "pgd": {"threedb": lambda: ours.PGD(eps=eps, steps=steps, step_size=alpha, restarts=1)(model, x, y).adv,
                "torchattacks": lambda: peers.torchattacks_pgd(eps, steps, alpha)(model, x, y),
                "art": lambda: peers.art_pgd(eps, steps, alpha, 1, k, bs)(model, x, y)},
        "apgd-ce": {"threedb": lambda: ours.APGD(eps=eps, steps=steps, loss="ce")(model, x, y).adv,
                    "torchattacks": lambda: peers.torchattacks_apgd(eps, steps, "ce")(model, x, y),
                    "art": lambda: peers.art_apgd(eps, steps, "ce", k, bs)(model, x, y)},
        "apgd-dlr": {"threedb": lambda: ours.APGD(eps=eps, steps=steps, loss="dlr")(model, x, y).adv,
                     "torchattacks": lambda: peers.torchattacks_apgd(eps, steps, "dlr")(model, x, y),
                     "art": lambda: peers.art_apgd(eps, steps, "dlr", k, bs)(model, x, y)},
        "square": {"threedb": lambda: ours.Square(eps=eps, queries=args.queries)(model, x, y).adv,
                   "torchattacks": lambda: peers.torchattacks_square(eps, args.queries)(model, x, y),
                   "art": lambda: peers.art_square(eps, args.queries, k, bs)(model, x, y)},
    }
    clean = peers.robust_accuracy(model, x, y)
    print(f"quickstart model, {n} images, L-inf eps {eps:.4f}, {steps} steps (step {alpha:.4f}), "
          f"{args.queries} Square queries, {device}; clean accuracy {clean:.3f}; median of {args.repeats}")
    print(f"{'attack':<10} {'library':<13} {'robust acc':>10} {'+-1 SE':>7} {'images/s':>9} "
          f"{'strength: ours <= it + SE':>26} {'speed: ours / it':>17}")
    verdicts = []
    for name, libs in suites.items():
        if args.only and name not in args.only:
            continue
        results: dict[str, tuple[float, float]] = {}
        times: dict[str, list[float]] = {lib: [] for lib in libs}
        for _ in range(args.repeats):
            for lib, run in libs.items():       # interleaved, so load changes hit every library alike
                adv, seconds = timed(run, device)
                adv = adv.detach()
                if float((adv - x).abs().max()) > eps + 1e-5 or float(adv.min()) < 0 or float(adv.max()) > 1:
                    raise SystemExit(f"{lib} {name}: output outside the ball or the box")
                times[lib].append(seconds)
                results[lib] = (peers.robust_accuracy(model, adv, y), 0.0)
        rate = {lib: n / statistics.median(t) for lib, t in times.items()}
        ours_acc = results["threedb"][0]
        for lib in libs:
            acc = results[lib][0]
            se = peers.standard_error(acc, n)
            if lib == "threedb":
                print(f"{name:<10} {lib:<13} {acc:>10.3f} {se:>7.3f} {rate[lib]:>9.1f}")
                continue
            strong = ours_acc <= acc + se
            speed = rate["threedb"] / rate[lib]
            target = 1.0 if lib == "torchattacks" else 1.5
            verdicts.append(strong and speed >= target)
            print(f"{'':<10} {lib:<13} {acc:>10.3f} {se:>7.3f} {rate[lib]:>9.1f} "
                  f"{('yes' if strong else 'NO') + f' ({ours_acc:.3f} vs {acc + se:.3f})':>26} "
                  f"{speed:>9.2f}x (>= {target})")
    print(f"targets met: {sum(verdicts)}/{len(verdicts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
