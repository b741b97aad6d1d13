"""Render scaling and per-job costs: how many render workers one evaluator can serve.

Measured in one run, on pipeline_efficiency's scene (the mug on city.exr):

* renders/s of a render-only `threedb run` (no `inference:`/`evaluation:`) with 1 and with 2 render
  workers, from the first logged job to the last (start-up excluded);
* render time per job of the bare renderer (a RenderProcess in a loop, no master);
* evaluation time per image of a ResNet-18 (torchvision, random weights, 224 x 224 input) on the CPU,
  batches of ``--batch`` renders through threedb's own model loader and preprocessing;
* the estimate: one evaluator's images/s divided by one render worker's renders/s.

Blender and torch share this machine's cores, so the CPU figures are for this machine only; an
evaluator on a GPU would serve many more workers, but that figure needs a GPU to measure.

    python benchmarks/render_scaling.py [--jobs 40] [--resolution 128] [--samples 16] [--batch 16]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluator_overhead import variants  # noqa: E402
from evaluator_throughput import load_resnet, seconds_per_image  # noqa: E402
from pipeline_efficiency import bare_rate, pipeline_rate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16, help="evaluation batch size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        configs = variants(work, args.jobs, args.resolution, args.samples)
        render_only = configs["evaluation off (render-only)"]
        rates = {n: pipeline_rate(render_only, work / f"run{n}", args.jobs, render_workers=n) for n in (1, 2)}
        bare, _ = bare_rate(render_only)
        eval_s = seconds_per_image(load_resnet(work, "cpu"), args.resolution, args.batch, seconds=0.0)
    cores = os.cpu_count()
    print(f"scene: pybullet mug on city.exr, {args.resolution} px, {args.samples} spp, {args.jobs} jobs; "
          f"{cores} CPU cores (load average {os.getloadavg()[0]:.1f}), torch {torch.get_num_threads()} threads, "
          "no GPU used")
    print(f"renders/s (render-only threedb run): 1 worker {rates[1]:.2f}, 2 workers {rates[2]:.2f} "
          f"(x{rates[2] / rates[1]:.2f})")
    print(f"render time per job (bare renderer): {1000 / bare:.0f} ms")
    print(f"evaluation time per image (ResNet-18, 224 px, CPU, batch {args.batch}): {1000 * eval_s:.1f} ms")
    served = (1 / eval_s) / rates[1]
    print(f"ESTIMATE one CPU evaluator ({1 / eval_s:.1f} images/s) serves {served:.1f} render workers "
          f"of {rates[1]:.2f} renders/s each (this machine; a GPU evaluator needs a GPU to measure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
