"""Evaluator throughput: images/s of a ResNet-18 (224 x 224 input) at batch sizes 1, 32 and 128.

Measured through threedb's own model loader and ``LoadedModel.predict`` (what an evaluator worker
runs): uint8 renders -> preprocessing on the CPU -> the device (pinned memory, channels_last and
fp16/bf16 autocast on CUDA, see ``threedb.evaluators.models``) -> outputs back on the CPU. Random
weights (throughput does not depend on them); renders at 224 px, so no resize. All batch sizes are
measured in one run, and the ratio to batch 1 is printed beside each.

    python benchmarks/evaluator_throughput.py [--device auto|cpu|cuda] [--batches 1 32 128] [--seconds 3]

On this project's CPU machines it prints CPU figures; run it on a GPU machine for the GPU ones.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESNET = {"torchvision": "resnet18", "resolution": [224, 224],
          "label_map": "imagenet_classes.json",
          "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def load_resnet(work: Path, device: str) -> object:
    """ResNet-18 (random weights) loaded by threedb's model loader on ``device``."""
    from threedb.evaluators.models import load_model

    (work / "imagenet_classes.json").write_text(json.dumps([f"class {i}" for i in range(1000)]))
    return load_model({**RESNET, "device": device}, base_dir=work, device=device)


def seconds_per_image(model: object, resolution: int, batch: int, *, seconds: float = 3.0,
                      min_batches: int = 3) -> float:
    """Seconds per image of ``model.predict`` on batches of ``batch`` random ``resolution``-px renders,
    after one warm-up batch, over at least ``min_batches`` batches and ``seconds`` seconds."""
    images = np.random.default_rng(0).integers(0, 256, (batch, resolution, resolution, 3), dtype=np.uint8)
    model.predict(images)  # warm-up (cuDNN autotuning, allocator)
    done, start = 0, time.perf_counter()
    while done < min_batches or time.perf_counter() - start < seconds:
        model.predict(images)   # returns CPU tensors: the device work is finished when it returns
        done += 1
    return (time.perf_counter() - start) / (done * batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per batch size")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    with tempfile.TemporaryDirectory() as tmp:
        model = load_resnet(Path(tmp), device)
        rates = {b: 1.0 / seconds_per_image(model, 224, b, seconds=args.seconds) for b in args.batches}
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} torch threads"
    print(f"ResNet-18, 224 px, random weights, {name}; precision {model.autocast_dtype or torch.float32}, "
          f"channels_last {model.channels_last}")
    first = rates[args.batches[0]]
    for b, rate in rates.items():
        print(f"  batch {b:>4}: {rate:8.1f} images/s   ({rate / first:.2f} x batch {args.batches[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
