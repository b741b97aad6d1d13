"""The cost of background variants against the model that consumes them.

Measured in one run, interleaved (``--repeats`` rounds, each method once per round, median per method),
on ``--images`` synthetic ``--size``-px photos (smooth backgrounds, one textured object each, ``--classes``
classes) and a torchvision ResNet-18 with random weights (throughput does not depend on them) on the CPU:

* **inference**: plain batched inference, ``--batch-size`` float images per forward pass under
  ``torch.inference_mode`` (eval mode): the yardstick;
* **variants, mask**: :func:`threedb.robustness.backgrounds.make_variants` on exact masks (rendered data)
  plus making every image of all eight variants (``VariantSet.batch``); images/s of outputs, and that rate
  over the inference rate (> 1: the model, not the variants, is the bottleneck of a variant job);
* **variants, GrabCut**: the same from one box per image (``--grabcut-iterations`` rounds of GrabCut);
* **adversarial backgrounds**: :func:`threedb.robustness.backgrounds.adversarial_backgrounds` (every
  foreground on every other-class ONLY-BG-T background, or ``--budget`` of them) through
  ``torch_predictor``; seconds per foreground, and the ratio to plain inference of the same number of
  composite images (the overhead of compositing and the uint8 -> float conversion; 1.0 is free).

    python benchmarks/background_variants.py [--images 32] [--size 96] [--classes 4] [--batch-size 64]
                                             [--grabcut-iterations 5] [--budget N] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch


def synthetic_photos(n: int, size: int, classes: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """``(image, exact mask, label)``: a smooth two-colour gradient background and a textured ellipse whose
    colour depends on the class (so GrabCut has something to separate)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for k in range(n):
        label = k % classes
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (0.5 * yy + 0.5 * xx)[..., None]
        image = (a * (1 - t) + b * t + rng.normal(0, 6, (size, size, 3))).clip(0, 255)
        cy, cx = rng.uniform(0.35, 0.65, 2)
        ry, rx = rng.uniform(0.15, 0.3, 2)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        colour = np.array([(60 * label) % 256, 255 - (40 * label) % 256, (90 * label + 30) % 256], float)
        image[mask] = (colour + rng.normal(0, 20, (int(mask.sum()), 3))).clip(0, 255)
        out.append((image.astype(np.uint8), mask, label))
    return out


def measure(methods: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each method: one warm-up, then ``repeats`` interleaved rounds."""
    for run in methods.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=96, help="image side in pixels (64-96 keeps it quick)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--grabcut-iterations", type=int, default=5)
    parser.add_argument("--budget", type=int, default=None, help="backgrounds tried per foreground (default all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the project's CPU machines are shared 2-core ones)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import cv2
    import torchvision

    from threedb.robustness.backgrounds import Sample, adversarial_backgrounds, make_variants, torch_predictor

    cv2.setNumThreads(args.threads)
    photos = synthetic_photos(args.images, args.size, args.classes)
    with_masks = [Sample(image=im, label=y, id=f"p{k}", mask=m) for k, (im, m, y) in enumerate(photos)]
    pad = max(2, args.size // 24)
    with_boxes = []
    for k, (im, m, y) in enumerate(photos):
        rows, cols = np.nonzero(m)
        box = [max(0, cols.min() - pad), max(0, rows.min() - pad), min(args.size, cols.max() + 1 + pad),
               min(args.size, rows.max() + 1 + pad)]
        with_boxes.append(Sample(image=im, label=y, id=f"p{k}", boxes=np.array([box], float)))
    common = dict(num_classes=args.classes, crop=None, seed=0)   # synthetic photos: no model crop to model

    model = torchvision.models.resnet18(weights=None, num_classes=args.classes).eval()
    predict = torch_predictor(model)
    probe = make_variants(with_masks, **common)
    outputs = len(probe.rows)
    grabcut_probe = make_variants(with_boxes, grabcut_iterations=args.grabcut_iterations, **common)
    grabcut_outputs = len(grabcut_probe.rows)
    fgs, bgs = probe.foreground_samples(), probe.background_samples()
    composites = adversarial_backgrounds(predict, fgs, bgs, budget=args.budget, batch_size=args.batch_size).evaluations

    batch = torch.rand(args.batch_size, 3, args.size, args.size)

    def infer(n: int) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for start in range(0, n, args.batch_size):
                    model(batch[:min(args.batch_size, n - start)]).argmax(1)
        return run

    def variants(samples: list[Sample], **extra: int) -> Callable[[], None]:
        def run() -> None:
            vs = make_variants(samples, **common, **extra)
            for name in vs.variants:
                vs.batch(name)
        return run

    def adversarial() -> None:
        adversarial_backgrounds(predict, fgs, bgs, budget=args.budget, batch_size=args.batch_size)

    methods = {"inference (variant outputs)": infer(outputs), "variants, mask": variants(with_masks),
               "inference (GrabCut outputs)": infer(grabcut_outputs),
               "variants, GrabCut": variants(with_boxes, grabcut_iterations=args.grabcut_iterations),
               "inference (composites)": infer(composites), "adversarial backgrounds": adversarial}
    print(f"ResNet-18 (random weights, {args.classes} classes) at {args.size} px on the CPU, {args.threads} "
          f"threads, batch size {args.batch_size}; {args.images} synthetic photos; median of {args.repeats} "
          "interleaved rounds")
    sec = measure(methods, args.repeats)
    infer_rate = outputs / sec["inference (variant outputs)"]
    print(f"  inference                {infer_rate:>9.1f} images/s")
    for name, n, base in (("variants, mask", outputs, "inference (variant outputs)"),
                          ("variants, GrabCut", grabcut_outputs, "inference (GrabCut outputs)")):
        rate, base_rate = n / sec[name], n / sec[base]
        print(f"  {name:<24} {rate:>9.1f} images/s ({n} outputs)  {rate / base_rate:6.2f}x inference")
    grabcut = grabcut_probe.counts
    print(f"    GrabCut kept {grabcut['kept']}/{grabcut['input']} images (failed {grabcut['grabcut_failed']}), "
          f"{1000 * (sec['variants, GrabCut'] - sec['variants, mask']) / args.images:.1f} ms per image over the "
          "mask path")
    per_fg = sec["adversarial backgrounds"] / len(fgs)
    base_per_fg = sec["inference (composites)"] / len(fgs)
    print(f"  adversarial backgrounds  {1000 * per_fg:>9.1f} ms per foreground ({composites // len(fgs)} "
          f"backgrounds each); inference of the same images {1000 * base_per_fg:.1f} ms: "
          f"{per_fg / base_per_fg:.2f}x inference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
