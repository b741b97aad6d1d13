"""Renderer overhead and worker memory, measured side by side in one run.

1. Seconds per image of threedb's render worker (RenderProcess: job over a pipe, controls applied and
   undone, passes read back and converted, arrays returned) vs a bare ``bpy`` loop rendering the
   same scene (object and camera poses copied from threedb's renders) with the same settings to the
   same multilayer EXR. Both run in spawned processes, alternating in short blocks so that machine
   noise hits both alike. Target ratio <= 1.10.
2. Resident memory growth of one render worker over N renders (no recycling), and with recycling.

    python benchmarks/render_overhead.py [--renders 200] [--blocks 12] [--block-size 5]
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from threedb.controls.registry import resolve_control
from threedb.sim.assets import check_mesh, load_catalog
from threedb.sim.jobs import PreparedObject, make_job
from threedb.sim.render.files import read_exr
from threedb.sim.render.process import RenderProcess, fast_scratch_dir
from threedb.sim.render.settings import RenderSettings

SETTINGS = RenderSettings(resolution=128, samples=16, passes=("depth", "mask", "uv"), threads=1)


def bare_loop(conn, obj_path: str, hdri: str, center: list[float], poses: list[tuple[list, list]],
              scratch: str) -> None:
    """The same scene and settings with nothing but bpy calls; reports seconds per render.

    ``poses`` are (object_to_world, camera_to_world) matrices recorded from threedb's renders, so
    both loops render exactly the same images.
    """
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # Blender's console output, as threedb's worker does
    import bpy
    from mathutils import Matrix, Vector

    from threedb.sim.render.scene import _add_spherical_uv

    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.engine = "CYCLES"
    sc.render.resolution_x, sc.render.resolution_y = SETTINGS.resolution
    sc.render.use_persistent_data = True
    sc.render.film_transparent = True
    sc.render.threads_mode, sc.render.threads = "FIXED", SETTINGS.threads
    sc.cycles.samples = SETTINGS.samples
    sc.cycles.use_denoising = False
    sc.view_settings.view_transform = "Standard"  # threedb's colour settings (docs/rendering.md)
    layer = sc.view_layers[0]
    layer.use_pass_z = layer.use_pass_uv = layer.use_pass_object_index = layer.use_pass_environment = True
    sc.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    sc.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
    sc.render.image_settings.color_depth = "32"
    sc.render.image_settings.exr_codec = "NONE"
    sc.render.filepath = f"{scratch}/bare.exr"
    bpy.ops.wm.obj_import(filepath=obj_path, forward_axis="Y", up_axis="Z")
    obj = bpy.context.selected_objects[0]
    obj.pass_index = 1
    _add_spherical_uv(obj.data)  # same mesh data as threedb renders (the mug has no UV map of its own)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    cam.data.clip_start, cam.data.clip_end = 0.01, 1000.0  # as threedb's camera
    sc.collection.objects.link(cam)
    sc.camera = cam
    world = bpy.data.worlds.new("w")
    sc.world = world
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    env = nodes.new("ShaderNodeTexEnvironment")
    env.image = bpy.data.images.load(hdri)
    mapping = nodes.new("ShaderNodeMapping")  # same world shader as threedb's (HDRI rotation)
    links.new(nodes.new("ShaderNodeTexCoord").outputs["Generated"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    links.new(env.outputs["Color"], nodes["Background"].inputs["Color"])
    offset = Matrix.Translation(-Vector(center))

    def pose(i: int) -> None:
        obj.matrix_world = Matrix(poses[i][0]) @ offset
        cam.matrix_world = Matrix(poses[i][1])

    pose(0)
    bpy.ops.render.render(write_still=True)  # first render syncs the scene; not timed
    conn.send("ready")
    while True:  # each request: a list of pose indices to render; answer: seconds per render
        indices = conn.recv()  # trusted: our own parent process
        if indices is None:
            return
        times = []
        for i in indices:
            pose(i)
            t = time.perf_counter()
            bpy.ops.render.render(write_still=True)
            times.append(time.perf_counter() - t)
        conn.send(times)


class BareLoop:
    """The bare bpy loop in a spawned process, rendering pose indices on request."""

    def __init__(self, obj_path: str, hdri: str, center: list[float], poses: list) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.scratch = fast_scratch_dir()
        self.proc = ctx.Process(target=bare_loop, args=(child, obj_path, hdri, center, poses, str(self.scratch)))
        self.proc.start()
        assert self.conn.recv() == "ready"

    def render(self, indices: list[int]) -> list[float]:
        self.conn.send(indices)
        return self.conn.recv()

    def last_object_index(self) -> np.ndarray:
        channels = read_exr(self.scratch / "bare.exr")
        return np.rint(next(v for k, v in channels.items() if k.endswith("Object Index.X"))).astype(np.uint8)

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join()
        shutil.rmtree(self.scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=200, help="renders for the memory measurement")
    parser.add_argument("--blocks", type=int, default=12, help="alternating blocks per loop")
    parser.add_argument("--block-size", type=int, default=5, help="renders per block (distinct poses)")
    args = parser.parse_args()

    catalog = load_catalog("default")
    mug, city = catalog.objects["mug"], catalog.environments["city"]
    obj = PreparedObject(mug, check_mesh(mug, 1.0), True, 1.0)
    orientation = resolve_control({"type": "orientation", "rotation_z": [-math.pi, math.pi]},
                                  key="controls[0]", file=None, base_dir=Path("."))

    def job(i: int, n: int) -> dict:
        angle = -math.pi + 2 * math.pi * (i + 0.5) / n
        return make_job(f"bench-{i}", 0, obj, city, [orientation], {"orientation": {"rotation_z": angle}})

    print(f"scene: pybullet mug on city.exr, {SETTINGS.resolution[0]}x{SETTINGS.resolution[1]} px, "
          f"{SETTINGS.samples} spp, {SETTINGS.threads} thread, passes rgb+depth+mask+uv")
    ours_t: list[float] = []
    inside_t: list[float] = []
    bare_t: list[float] = []
    n = args.block_size
    with RenderProcess(SETTINGS, fast_scratch_dir()) as worker:
        outputs = [worker.render(job(i, n)) for i in range(n)]  # scene sync and poses, not timed
        poses = [(o.meta["object_to_world"], o.meta["camera_to_world"]) for o in outputs]
        bare = BareLoop(str(mug.path), str(city.path), list(obj.normalization.center), poses)
        # Alternate short blocks so that the shared machine's noise hits both loops alike.
        for block in range(args.blocks):
            bare_t += bare.render(list(range(n)))
            for i in range(n):
                t = time.perf_counter()
                out = worker.render(job(i, n))
                ours_t.append(time.perf_counter() - t)
                inside_t.append(out.meta["render_seconds"])
        same = float((bare.last_object_index() == out.passes["instance"]).mean())
        bare.close()
    print(f"same scene check: object-index pass of the last pose agrees on {same:.1%} of pixels")
    print(f"threedb time outside Blender's render call: {statistics.median(np.subtract(ours_t, inside_t)) * 1000:.1f}"
          " ms/img (job encoding, controls, pass read-back and conversion, transfer)")
    bare_med, ours_med = statistics.median(bare_t), statistics.median(ours_t)
    print(f"seconds per image (median of {len(ours_t)}): bare bpy {bare_med:.4f}, threedb {ours_med:.4f}")
    print(f"RATIO threedb / bare bpy = {ours_med / bare_med:.3f}  (target <= 1.10)")

    for label, max_jobs in (("no recycling", 10 ** 9), ("recycling every 100 jobs", 100)):
        settings = SETTINGS.model_copy(update={"max_jobs_per_worker": max_jobs})
        rss = []
        with RenderProcess(settings, fast_scratch_dir()) as worker:
            for i in range(args.renders):
                rss.append(worker.render(job(i, args.renders)).meta["rss_bytes"])
        growth = (max(rss) - rss[0]) / 2 ** 20
        warm = (max(rss[10:]) - rss[9]) / 2 ** 20 if len(rss) > 10 else float("nan")
        marks = ", ".join(f"{i + 1}: {rss[i] / 2 ** 20:.0f}" for i in sorted({0, 1, 9, 49, 99, len(rss) - 1})
                          if i < len(rss))
        print(f"worker RSS over {args.renders} renders ({label}), MiB after render {marks}; "
              f"peak - first = {growth:+.1f} MiB (target < 50 MiB); after the first 10: {warm:+.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
