"""Pipeline efficiency: `threedb run` renders/s divided by the bare renderer's renders/s, in one run.

Same scene settings and jobs for both, one render process each (the machine has 2 cores): the bare
renderer is threedb's RenderProcess driven in a loop (no master, transport, evaluation or logging);
the pipeline is `threedb run` with 1 render worker and 1 evaluator worker (a tiny CNN on the CPU)
writing images and details.log. Start-up (Blender, model loading) is excluded from both: rates are
measured from the first finished job to the last. Target ratio >= 0.90. The pipeline runs twice, with
the local workers' per-run CURVE keys (the default) and with ``--no-local-auth``: the second ratio is what
authentication costs.

    python benchmarks/pipeline_efficiency.py [--jobs 40] [--resolution 128] [--samples 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

MODEL = '''
import torch
from torch import nn


class BenchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))
'''


def write_experiment(work: Path, jobs: int, resolution: int, samples: int) -> Path:
    (work / "bench_net.py").write_text(MODEL)
    sys.path.insert(0, str(work))
    from bench_net import BenchNet  # noqa: E402 (written just above)

    torch.manual_seed(0)
    torch.save(BenchNet().state_dict(), work / "bench.pt")
    (work / "classes.json").write_text(json.dumps(["mug", "other"]))
    (work / "map.json").write_text(json.dumps({"mug": 0}))
    config = {
        "seed": 0,
        "assets": {"root": "default", "objects": ["mug"], "environments": ["city"]},
        "render": {"resolution": resolution, "samples": samples, "passes": ["mask"], "threads": 1},
        "controls": [{"type": "orientation", "rotation_z": [-3.1, 3.1]}],
        "policy": {"type": "grid", "samples_per_dim": jobs},
        "inference": {"file": "bench_net.py", "class": "BenchNet", "weights": "bench.pt", "resolution": [64, 64],
                      "label_map": "classes.json", "device": "cpu",
                      "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        "evaluation": {"type": "classification", "args": {"classmap_path": "map.json"}},
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def bare_rate(config: Path) -> tuple[float, int]:
    """Renders/s of a RenderProcess looping over the experiment's jobs (first job excluded)."""
    from threedb.policies.registry import make_policy
    from threedb.sim.config import load_config
    from threedb.sim.experiment import prepare
    from threedb.sim.jobs import make_job
    from threedb.sim.render.process import RenderProcess, fast_scratch_dir

    exp = load_config(config)
    prepared = prepare(exp)
    obj, env = prepared.objects[0], prepared.environments[0]
    policy = make_policy(exp.policy, prepared.space, seed=exp.seed)
    jobs = [make_job(f"{env.name}-{obj.asset.uid}-{p.id}", exp.seed, obj, env, exp.controls, p.values)
            for p in policy.propose(10 ** 6)]
    with RenderProcess(exp.render, fast_scratch_dir()) as worker:
        worker.render(jobs[0])
        start = time.perf_counter()
        for job in jobs[1:]:
            worker.render(job)
        return (len(jobs) - 1) / (time.perf_counter() - start), len(jobs)


def pipeline_rate(config: Path, out: Path, jobs: int, render_workers: int = 1, auth: bool = True) -> float:
    """Renders/s of `threedb run`, from its first logged job to its last (``auth``: the default per-run CURVE
    keys of the local workers; off: ``--no-local-auth``)."""
    proc = subprocess.Popen([sys.executable, "-m", "threedb.sim.cli", "run", str(config), "--out", str(out),
                             "--render-workers", str(render_workers), "--evaluators", "1",
                             *([] if auth else ["--no-local-auth"])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    log = out / "details.log"
    first = last = None
    seen = 0
    while proc.poll() is None or seen < jobs:
        lines = len(log.read_text().splitlines()) if log.exists() else 0
        now = time.perf_counter()
        if lines and first is None:
            first, first_count = now, lines
        if lines > seen:
            seen, last = lines, now
        if proc.poll() is not None and seen < jobs:
            break
        time.sleep(0.02)
    proc.wait()
    if proc.returncode != 0 or first is None or seen < jobs:
        raise SystemExit(f"threedb run failed ({proc.returncode}, {seen}/{jobs} rows):\n{proc.stderr.read()[-2000:]}")
    return (seen - first_count) / (last - first)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = write_experiment(work, args.jobs, args.resolution, args.samples)
        bare, n = bare_rate(config)
        piped = pipeline_rate(config, work / "run", n)
        open_run = pipeline_rate(config, work / "run_no_auth", n, auth=False)
    print(f"scene: pybullet mug on city.exr, {args.resolution} px, {args.samples} spp, 1 render process, {n} jobs")
    print(f"renders/s: bare renderer {bare:.2f}, threedb run {piped:.2f} (authenticated local workers, the "
          f"default), {open_run:.2f} (--no-local-auth)")
    print(f"RATIO threedb run / bare renderer = {piped / bare:.3f}  (target >= 0.90)")
    print(f"RATIO authenticated / unauthenticated = {piped / open_run:.3f}  (the cost of CURVE on loopback)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
