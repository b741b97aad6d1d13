"""Train on the projected source vs the uniform source, test on the target (issue 15's experiment, small scale).

1. ``threedb project`` (the job, in process) on ``--config`` with ``resample.n = --n`` and the uniform baseline
   (``resample.uniform: true``): ``OUT/project/resampled/`` (drawn by the projection weights) and
   ``OUT/project/uniform/`` (uniform group weights: the thesis' Random);
2. ``threedb train`` (the real command) of a small ``SmallResNet`` on each set, once per ``--seeds`` seed;
3. every model evaluated on the job's target samples (disjoint from the source by the config's split).

Printed: target accuracy per set and seed, mean and standard deviation per set, and the difference
(projected - uniform). The thesis reports STL10 source Random 12.6 -> AS-PD 37.7 on a 3DB target; this is a
two-HDRI toy (the default: sunrise target, courtyard + sunrise source), so expect a small, noisy gap.

    python benchmarks/projection_training.py [--config configs/project_quickstart.yaml] [--n 440]
                                             [--epochs 10] [--seeds 3] [--width 16] [--threads 2]
                                             [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def train_config(data: Path, out: Path, *, seed: int, epochs: int, width: int, threads: int) -> dict:
    return {"seed": seed, "data": {"train": str(data), "cache": True},
            "model": {"module": "threedb.evaluators.architectures", "class": "SmallResNet", "args": {"width": width},
                      "resolution": 64, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}},
            "training": {"epochs": epochs, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "schedule": "onecycle",
                         "augment": {"crop_scale": [0.7, 1.0], "flip": True, "color_jitter": 0.3}, "device": "cpu",
                         "threads": threads},
            "output": str(out)}


def accuracy(card: Path, target, device: torch.device) -> float:
    """Accuracy of the model of ``card`` on the target side's samples."""
    from threedb.evaluators.jobs.data import iterate_batches, load_job_model

    spec = json.loads(card.read_text())["inference"]
    model = load_job_model(spec, base_dir=card.parent, device=device)
    correct = 0
    with torch.no_grad():
        for batch in iterate_batches(target.dataset, target.indices, model.preprocess, 64, device):
            correct += int((model.model(batch.x).argmax(1) == batch.y).sum())
    return correct / len(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "project_quickstart.yaml"))
    parser.add_argument("--n", type=int, default=440, help="samples drawn into each training set")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from threedb.evaluators.project.config import load_project_config
    from threedb.evaluators.project.data import open_side
    from threedb.evaluators.project.runner import run_project_job
    from threedb.sim.cli import main as threedb

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="projection_training."))
    config = load_project_config(args.config, overrides={"resample.n": args.n, "resample.uniform": True})
    report = run_project_job(config, out=work / "project", device="cpu", quiet=True)
    target = open_side(config, "target")
    print(f"projection: {report['summary'][0]}\n  {report['summary'][1]}\n  {report['summary'][2]}")
    print(f"target: {len(target)} samples; training sets of {args.n} samples; SmallResNet width {args.width}, "
          f"{args.epochs} epochs, {args.threads} threads")
    results: dict[str, list[float]] = {}
    for name in ("resampled", "uniform"):
        for seed in range(args.seeds):
            out = work / f"train-{name}-{seed}"
            cfg = work / f"train-{name}-{seed}.yaml"
            cfg.write_text(yaml.safe_dump(train_config(work / "project" / name, out, seed=seed, epochs=args.epochs,
                                                       width=args.width, threads=args.threads)))
            if threedb(["train", str(cfg)]) != 0:
                return 1
            acc = accuracy(out / "card.json", target, torch.device("cpu"))
            results.setdefault(name, []).append(acc)
            print(f"  {name:<10} seed {seed}: target accuracy {acc:.3f}")
    print(f"{'training set':<28} {'mean':>6} {'sd':>6}  per seed")
    for name, label in (("resampled", "projected (resampled/)"), ("uniform", "uniform groups (uniform/)")):
        acc = results[name]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"{label:<28} {statistics.mean(acc):6.3f} {sd:6.3f}  {', '.join(f'{a:.3f}' for a in acc)}")
    print(f"projected - uniform: {statistics.mean(results['resampled']) - statistics.mean(results['uniform']):+.3f} "
          f"(work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
