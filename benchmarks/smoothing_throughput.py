"""The physical limit of randomized-smoothing certification: its throughput against plain inference.

For the same model on the same device with the same batch size, samples per second of

* **inference**: a pre-made batch of ``--batch-size`` noisy images through the model under
  ``torch.inference_mode`` (eval mode), ``--n / batch`` times: the most any sampler can reach;
* **class_counts**: :func:`threedb.robustness.smoothing.class_counts` with ``num = --n`` (noise drawn
  on the device, chunked, argmax and bincount per chunk);
* **certify**: :func:`threedb.robustness.smoothing.certify` (``n0 + n`` samples, the statistics);

measured interleaved (``--repeats`` rounds, each method once per round, median per method), over
``--images`` images of the shipped held-out dataset on the shipped quickstart model (loaded as the
robustness jobs load it). It prints each ratio to inference (target >= 0.9).

``--segmentation`` adds the same comparison for :func:`threedb.robustness.smoothing.pixel_counts` on a
small UNet (``threedb.evaluators.architectures.UNet``, random weights: throughput does not depend on
them) at the same resolution.

    python benchmarks/smoothing_throughput.py [--images 4] [--n 2000] [--n0 100] [--batch-size 400]
                                              [--sigma 0.25] [--repeats 5] [--segmentation]
                                              [--unet-width 8] [--device auto|cpu|cuda] [--threads 1]
                                              [--profile FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smoothing_peers import load, sync  # noqa: E402  (benchmarks/smoothing_peers.py)


def plain(model: torch.nn.Module, batch: torch.Tensor, chunks: int) -> None:
    """``chunks`` forward passes of the pre-made ``batch`` (the last one reduced to its argmax)."""
    with torch.inference_mode():
        for _ in range(chunks):
            out = model(batch)
        out.argmax(1)


def measure(methods: dict[str, tuple[Callable[[], None], int]], repeats: int,
            device: torch.device) -> dict[str, float]:
    """Samples/s of each ``name -> (run, samples per run)``: interleaved rounds, median seconds."""
    for run, _ in methods.values():      # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, (run, _) in methods.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: methods[name][1] / statistics.median(seconds[name]) for name in methods}


def report(title: str, rates: dict[str, float], baseline: str) -> list[bool]:
    print(title)
    ok = []
    for name, rate in rates.items():
        ratio = rate / rates[baseline]
        if name == baseline:
            print(f"  {name:<14} {rate:>10.0f} samples/s")
        else:
            ok.append(ratio >= 0.9)
            print(f"  {name:<14} {rate:>10.0f} samples/s  {ratio:.3f}x inference "
                  f"({'yes' if ratio >= 0.9 else 'NO'}, target >= 0.9)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--segmentation", action="store_true", help="also pixel_counts on a small UNet")
    parser.add_argument("--unet-width", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine, 2 OpenMP threads "
                             "beside another busy process slow down many times over)")
    parser.add_argument("--profile", help="write a torch profiler table of one class_counts call to FILE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    from threedb.robustness.smoothing import certify, class_counts, generator, pixel_counts

    model, x, _, _ = load(device, args.images)
    bs, n = args.batch_size, args.n
    chunks = (n + bs - 1) // bs
    gen = generator(device, 0)
    batch = (x[0] + args.sigma * torch.randn((bs,) + tuple(x.shape[1:]), generator=gen, device=device))
    images = list(x)

    def counts() -> None:
        for image in images:
            class_counts(model, image, sigma=args.sigma, num=n, batch_size=bs, gen=gen)

    def certified() -> None:
        for image in images:
            certify(model, image, sigma=args.sigma, n0=args.n0, n=n, alpha=args.alpha, batch_size=bs, gen=gen)

    # inference runs the same number of full batches as class_counts per image (n a multiple of bs: equal)
    per_image = chunks * bs
    methods = {"inference": (lambda: [plain(model, batch, chunks) for _ in images], len(images) * per_image),
               "class_counts": (counts, len(images) * n),
               "certify": (certified, len(images) * (args.n0 + n))}
    print(f"quickstart model (SmallResNet, {tuple(x.shape[1:])}) on {device}, {args.threads} CPU threads; "
          f"batch size {bs}, n {n}, n0 {args.n0}, {len(images)} images, median of {args.repeats} interleaved rounds")
    ok = report("classification", measure(methods, args.repeats, device), "inference")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            class_counts(model, images[0], sigma=args.sigma, num=n, batch_size=bs, gen=gen)
        sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        Path(args.profile).write_text(prof.key_averages().table(sort_by=sort, row_limit=30))
        print(f"profile of one class_counts call written to {args.profile}")

    if args.segmentation:
        from threedb.evaluators.architectures import UNet

        unet = UNet(num_classes=2, width=args.unet_width).to(device).eval()
        seg_bs = max(1, bs // 4)
        seg_n = max(seg_bs, (n // 4) // seg_bs * seg_bs)
        seg_chunks = seg_n // seg_bs
        seg_batch = batch[:seg_bs].clone()

        def seg_counts() -> None:
            for image in images:
                pixel_counts(unet, image, sigma=args.sigma, num=seg_n, batch_size=seg_bs, gen=gen)

        seg = {"inference": (lambda: [plain(unet, seg_batch, seg_chunks) for _ in images], len(images) * seg_n),
               "pixel_counts": (seg_counts, len(images) * seg_n)}
        print(f"segmentation: UNet width {args.unet_width}, batch size {seg_bs}, n {seg_n}")
        ok += report("segmentation", measure(seg, args.repeats, device), "inference")
    print(f"targets met: {sum(ok)}/{len(ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
