"""Our randomized-smoothing CERTIFY against ART 1.20.1's on the same base model, images, sigma, n0, n,
alpha and batch size.

The base model is the shipped quickstart model (assets/models/quickstart), loaded as the robustness
jobs load it (:func:`threedb.evaluators.jobs.data.load_job_model`: a model of [0, 1] images with the
normalisation inside), on ``--images`` images of the shipped held-out dataset spread over the classes.
Both libraries certify every image with Cohen et al.'s CERTIFY; the script prints

* both certified-accuracy curves, their per-radius difference and the binomial standard error of a
  curve point (``sqrt(p (1 - p) / images)``, p the pooled accuracy): they must agree within noise
  (|difference| <= 2 SE; the two runs draw different noise, so they are two independent samples of
  the same statistic, and each image can only flip near its radius);
* samples per second of each (``images * (n0 + n) / seconds``, median of ``--repeats``, libraries
  interleaved in one run) and the ratio ours / ART (target >= 1.5).

What ART's ``PyTorchRandomizedSmoothing.certify`` does (art/estimators/certification/
randomized_smoothing/randomized_smoothing.py, 1.20.1), and how the comparison is kept fair:

* selection: ``sample_size`` noisy samples (our ``n0``), argmax of the counts; estimation: ``n`` fresh
  samples; one-sided Clopper-Pearson bound (statsmodels ``proportion_confint(alpha=2 alpha,
  method="beta")[0]``, as ours); radius ``scale * PhiInv(pA)``. Difference: ART abstains when
  ``pA < 1/2`` (so ``pA == 1/2`` certifies radius 0), we when ``pA <= 1/2`` (Cohen et al.); with a
  continuous bound this never differs in practice.
* noise: ``np.random.normal(scale=sigma)`` in float64 on the CPU for all ``n`` copies at once
  (``np.repeat`` of the image: ``n x C x H x W`` in memory), cast to float32, **not clipped**
  (``clip_values`` is only used by ART's attacks; its sampling ``loss_gradient`` computes a clamp and
  discards it). Ours draws on the model's device, in chunks of ``batch_size``, also unclipped. ART's
  noise comes from NumPy's global generator (seeded here with ``--seed`` before each run), ours from
  per-example torch generators: the two runs use different noise by construction.
* inference: ART's ``PyTorchClassifier.predict`` (``torch.no_grad``, eval mode, a DataLoader over the
  noisy array, ``batch_size`` per forward pass, logits copied to NumPy, one-hot counts in NumPy).
  Ours: ``torch.inference_mode``, counts by ``bincount`` on the device. Same ``batch_size`` for both.
* preprocessing: the model normalises inside, so ART gets ``preprocessing=None`` and
  ``clip_values=None`` (pixel space in, noise in pixel space, like ours).

    python benchmarks/smoothing_peers.py [--images 33] [--sigma 0.25] [--n0 100] [--n 1000]
                                         [--alpha 0.001] [--batch-size 400] [--repeats 3]
                                         [--device auto|cpu|cuda] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "assets" / "models" / "quickstart"
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"


def load(device: torch.device, images: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, int]:
    """The quickstart model as a job loads it (pixel space), and ``images`` (x, y) spread over the classes."""
    from threedb.evaluators.datasets import ImageDataset
    from threedb.evaluators.jobs.data import load_job_model, stratified

    spec = json.loads((MODEL_DIR / "card.json").read_text())["inference"]
    job = load_job_model(spec, base_dir=MODEL_DIR, device=device)
    ds = ImageDataset(DATA, extras=False)
    items = [ds[i] for i in stratified(ds.targets, images)]
    x = job.preprocess([img.permute(1, 2, 0) for img, _ in items]).to(device)
    y = torch.tensor([int(label) for _, label in items], device=device)
    return job.model, x, y, int(job.output_shape[0])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(model: torch.nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float,
         batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """threedb's CERTIFY on every image: ``(predictions, radii)``."""
    from threedb.robustness.smoothing import certify, example_seed

    certs = [certify(model, x[i], sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                     seed=example_seed(seed, i)) for i in range(len(x))]
    return np.array([c.prediction for c in certs]), np.array([c.radius for c in certs])


def art_smoother(model: torch.nn.Module, x: torch.Tensor, num_classes: int, *, sigma: float, n0: int,
                 alpha: float):
    """ART's PyTorchRandomizedSmoothing around ``model`` (pixel space: no preprocessing, no clipping)."""
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    return PyTorchRandomizedSmoothing(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                      nb_classes=num_classes, clip_values=None, preprocessing=None,
                                      device_type="gpu" if x.device.type == "cuda" else "cpu",
                                      sample_size=n0, scale=sigma, alpha=alpha)


def art(smoother, x: torch.Tensor, *, n: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ART's CERTIFY on every image (NumPy's global generator seeded with ``seed``)."""
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred, rad = smoother.certify(x.detach().cpu().numpy().astype(np.float32), n=n, batch_size=batch_size)
    return np.asarray(pred), np.asarray(rad, dtype=np.float64)


def curve(pred: np.ndarray, radii: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    from threedb.robustness.smoothing import certified_accuracy

    return certified_accuracy(radii, pred == y, at)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=33)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--radii", type=float, nargs="*", default=[0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both libraries (default 1: on a shared 2-core machine, 2 "
                             "OpenMP threads beside another busy process slow down many times over)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    model, x, y, k = load(device, args.images)
    smoother = art_smoother(model, x, k, sigma=args.sigma, n0=args.n0, alpha=args.alpha)
    settings = dict(sigma=args.sigma, n0=args.n0, alpha=args.alpha, batch_size=args.batch_size)
    runs = {"threedb": lambda seed: ours(model, x, n=args.n, seed=seed, **settings),
            "art": lambda seed: art(smoother, x, n=args.n, batch_size=args.batch_size, seed=seed)}
    with torch.inference_mode():
        clean = float((model(x).argmax(1) == y).float().mean())
    samples = len(x) * (args.n0 + args.n)
    print(f"quickstart model on {device} ({args.threads} CPU threads), {len(x)} held-out images (clean accuracy "
          f"{clean:.3f}); sigma {args.sigma}, n0 {args.n0}, n {args.n}, alpha {args.alpha}, batch size "
          f"{args.batch_size}; {samples} samples per library per repeat, median of {args.repeats}, interleaved")
    # warm-up (allocator, cudnn autotuning, ART's first-call setup) on two images, one chunk each
    ours(model, x[:2], n=min(args.n, args.batch_size), seed=1, **settings)
    art(smoother, x[:2], n=min(args.n, args.batch_size), batch_size=args.batch_size, seed=1)
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for repeat in range(args.repeats):
        for name, run in runs.items():     # interleaved, so load changes hit both libraries alike
            sync(device)
            start = time.perf_counter()
            results[name] = run(args.seed + repeat)
            sync(device)
            times[name].append(time.perf_counter() - start)
    rate = {name: samples / statistics.median(t) for name, t in times.items()}
    at = np.asarray(args.radii, dtype=np.float64)
    labels = y.cpu().numpy()
    curves = {name: curve(*results[name], labels, at) for name in runs}
    print(f"{'radius':>7} {'threedb':>8} {'ART':>8} {'diff':>7} {'1 SE':>6} {'|diff| <= 2 SE':>15}")
    agree = []
    for i, r in enumerate(at):
        a, b = curves["threedb"][i], curves["art"][i]
        p = (a + b) / 2
        se = math.sqrt(max(p * (1 - p), 1e-12) / len(x))
        ok = abs(a - b) <= 2 * se + 1e-12
        agree.append(ok)
        print(f"{r:>7.3f} {a:>8.3f} {b:>8.3f} {a - b:>+7.3f} {se:>6.3f} {'yes' if ok else 'NO':>15}")
    abstain = {name: float((results[name][0] == -1).mean()) for name in runs}
    print(f"abstention rate: threedb {abstain['threedb']:.3f}, ART {abstain['art']:.3f}")
    ratio = rate["threedb"] / rate["art"]
    print(f"samples/s: threedb {rate['threedb']:.0f}, ART {rate['art']:.0f}; ours / ART {ratio:.2f}x (target >= 1.5)")
    print(f"targets met: curves agree {'yes' if all(agree) else 'NO'}; speed {'yes' if ratio >= 1.5 else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
