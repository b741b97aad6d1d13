"""``threedb render``: render a few scenes of a config to files for a quick look.

Scenes cycle through the experiment's objects and environments (grouped by environment, since
switching HDRI costs a scene re-sync); control values are drawn at random from the search space
with the experiment seed. Writes ``<id>_rgb.png`` plus lossless passes and ``preview.json``; a
scene that fails is recorded there with its error and the others still render.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from threedb.sim.experiment import PreparedExperiment
from threedb.sim.jobs import make_job
from threedb.sim.render.files import write_exr, write_png
from threedb.sim.render.outputs import RenderOutput
from threedb.sim.render.pointcloud import object_points, write_point_cloud
from threedb.sim.render.process import JobFailed, RenderProcess, WorkerCrashed, fast_scratch_dir


def preview_jobs(prepared: PreparedExperiment, n: int) -> list[dict[str, Any]]:
    """``n`` jobs over objects x environments with random control values (seeded)."""
    exp = prepared.experiment
    rng = np.random.default_rng(exp.seed)
    n_obj = len(prepared.objects)
    jobs = []
    for i in range(n):
        obj = prepared.objects[i % n_obj]
        env = prepared.environments[(i // n_obj) % len(prepared.environments)]
        jobs.append(make_job(f"preview-{i:04d}", exp.seed, obj, env, exp.controls, prepared.space.sample(rng)))
    return sorted(jobs, key=lambda job: job["environment"]["path"])


def save_output(out_dir: Path, job_id: str, output: RenderOutput, point_cloud: bool) -> dict[str, str]:
    """Write one render's files; returns {output name: file name}."""
    files = {"rgb": f"{job_id}_rgb.png"}
    write_png(out_dir / files["rgb"], output.rgb)
    passes = output.passes
    if "mask" in passes:
        files["mask"] = f"{job_id}_mask.png"
        write_png(out_dir / files["mask"], passes["mask"].astype(np.uint8) * 255)
    if "instance" in passes:
        files["instance"] = f"{job_id}_instance.png"
        write_png(out_dir / files["instance"], passes["instance"])
    if "depth" in passes:
        files["depth"] = f"{job_id}_depth.exr"
        write_exr(out_dir / files["depth"], passes["depth"], "Z")
    if "uv" in passes:
        files["uv"] = f"{job_id}_uv.exr"
        write_exr(out_dir / files["uv"], passes["uv"], ("U", "V"))
    if point_cloud:
        points, colours = object_points(passes["depth"], passes["mask"], output.rgb,
                                        np.array(output.meta["K"]), np.array(output.meta["camera_to_world"]))
        files["point_cloud"] = f"{job_id}_points.ply"
        write_point_cloud(out_dir / files["point_cloud"], points, colours)
    return files


def render_preview(prepared: PreparedExperiment, out_dir: str | Path, n: int,
                   on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Render ``n`` preview scenes into ``out_dir``; returns the path of ``preview.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = prepared.experiment.render
    records = []
    scratch = fast_scratch_dir()
    with RenderProcess(settings, scratch) as worker:
        jobs = preview_jobs(prepared, n)
        for done, job in enumerate(jobs, 1):
            record: dict[str, Any] = {"id": job["id"], "object": job["object"]["uid"],
                                      "environment": job["environment"]["name"], "seed": job["seed"],
                                      "controls": {c["name"]: c["values"] for c in job["controls"]}}
            try:
                output = worker.render(job)
            except (JobFailed, WorkerCrashed) as exc:  # recorded; the other scenes still render
                record["error"] = str(exc)
            else:
                record.update(files=save_output(out, job["id"], output, settings.point_cloud),
                              camera={k: output.meta[k] for k in ("K", "camera_to_world")},
                              object_to_world=output.meta["object_to_world"],
                              controls_report=output.meta.get("controls_report", {}),
                              render_seconds=output.meta["render_seconds"])
            records.append(record)
            if on_progress:
                on_progress(done, len(jobs))
    shutil.rmtree(scratch, ignore_errors=True)
    manifest = out / "preview.json"
    manifest.write_text(json.dumps({"config": str(prepared.experiment.source), "renders": records}, indent=1))
    return manifest
