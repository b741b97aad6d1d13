"""Evaluator overhead: wall time of the same `threedb run` with evaluation on vs off, in one run.

The same jobs (pipeline_efficiency's experiment: the mug on city.exr, 1 render worker) run three
ways, interleaved: render-only (the config without `inference:`/`evaluation:`, so every render is
logged as it arrives), with the tiny CNN evaluator, and with a ResNet-18 (random weights, 224 px,
CPU) evaluator. Wall time covers the whole command (start-up, Blender, model loading, shutdown);
the steady rate (first logged job to last) is printed beside it. Target: wall-time ratio
evaluation on / off <= 1.10 (for the tiny CNN; the ResNet-18 line shows what a real model costs
when it shares this machine's CPU cores with Blender).

    python benchmarks/evaluator_overhead.py [--jobs 40] [--resolution 128] [--samples 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluator_throughput import RESNET as RESNET_SPEC  # noqa: E402
from pipeline_efficiency import pipeline_rate, write_experiment  # noqa: E402

RESNET = {**RESNET_SPEC, "device": "cpu"}


def variants(work: Path, jobs: int, resolution: int, samples: int) -> dict[str, Path]:
    """Config files of the three variants (same jobs and scene)."""
    base = write_experiment(work, jobs, resolution, samples)
    data = yaml.safe_load(base.read_text())
    off = {k: v for k, v in data.items() if k not in ("inference", "evaluation")}
    (work / "imagenet_classes.json").write_text(json.dumps([f"class {i}" for i in range(1000)]))
    resnet = {**data, "inference": RESNET}
    paths = {"evaluation off (render-only)": off, "evaluation on: tiny CNN": data, "evaluation on: ResNet-18": resnet}
    out = {}
    for i, (name, cfg) in enumerate(paths.items()):
        out[name] = work / f"variant{i}.yaml"
        out[name].write_text(yaml.safe_dump(cfg))
    return out


def timed_run(config: Path, out: Path, jobs: int) -> tuple[float, float]:
    """(wall seconds of the whole `threedb run`, steady renders/s)."""
    start = time.perf_counter()
    rate = pipeline_rate(config, out, jobs)
    return time.perf_counter() - start, rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        configs = variants(work, args.jobs, args.resolution, args.samples)
        for r in range(args.repeats):
            for i, (name, config) in enumerate(configs.items()):
                wall, rate = timed_run(config, work / f"run{r}-{i}", args.jobs)
                walls.setdefault(name, []).append(wall)
                rates.setdefault(name, []).append(rate)
    print(f"scene: pybullet mug on city.exr, {args.resolution} px, {args.samples} spp, 1 render worker, "
          f"{args.jobs} jobs, median of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    off = statistics.median(walls["evaluation off (render-only)"])
    for name in configs:
        wall, rate = statistics.median(walls[name]), statistics.median(rates[name])
        print(f"  {name:<30} wall {wall:6.1f} s   steady {rate:5.2f} renders/s   wall / off = {wall / off:.3f}")
    ratio = statistics.median(walls["evaluation on: tiny CNN"]) / off
    print(f"RATIO wall time evaluation on / off = {ratio:.3f}  (target <= 1.10; tiny CNN evaluator)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
