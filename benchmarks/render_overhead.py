"""Renderer overhead and worker memory, measured side by side in one run.

1. Seconds per image of threedb's render worker (RenderProcess: job over a pipe, controls applied and
   undone, passes read back and converted, arrays returned) vs a bare ``bpy`` loop rendering the
   same scene with the same settings to the same multilayer EXR. Both run in spawned processes,
   alternating in blocks so that machine noise hits both alike. Target ratio <= 1.10.
2. Resident memory growth of one render worker over N renders (no recycling), and with recycling.

    python benchmarks/render_overhead.py [--renders 200] [--blocks 3] [--block-size 20]
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import statistics
import sys
import time

from threedb.sim.assets import load_catalog
from threedb.sim.jobs import PreparedObject, make_job
from threedb.sim.assets import check_mesh
from threedb.sim.render.process import RenderProcess, fast_scratch_dir
from threedb.sim.render.settings import RenderSettings
from threedb.controls.registry import resolve_control
from pathlib import Path

SETTINGS = RenderSettings(resolution=128, samples=16, passes=("depth", "mask", "uv"), threads=1)


def bare_loop(conn, obj_path: str, hdri: str, n: int, scratch: str) -> None:
    """The same scene and settings with nothing but bpy calls; reports seconds per render."""
    import bpy
    from mathutils import Vector

    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.engine = "CYCLES"
    sc.render.resolution_x, sc.render.resolution_y = SETTINGS.resolution
    sc.render.use_persistent_data = True
    sc.render.film_transparent = True
    sc.render.threads_mode, sc.render.threads = "FIXED", SETTINGS.threads
    sc.cycles.samples = SETTINGS.samples
    sc.cycles.use_denoising = False
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
    extent = max(obj.dimensions)
    obj.scale = (1 / extent,) * 3
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    sc.collection.objects.link(cam)
    sc.camera = cam
    d = Vector((0, -1, 0.35)).normalized()
    cam.location = d * 2.2
    cam.rotation_euler = (-d).to_track_quat("-Z", "Y").to_euler()
    world = bpy.data.worlds.new("w")
    sc.world = world
    world.use_nodes = True
    env = world.node_tree.nodes.new("ShaderNodeTexEnvironment")
    env.image = bpy.data.images.load(hdri)
    world.node_tree.links.new(env.outputs["Color"], world.node_tree.nodes["Background"].inputs["Color"])
    bpy.ops.render.render(write_still=True)  # first render syncs the scene; not timed
    times = []
    for i in range(n):
        obj.rotation_euler[2] = -math.pi + 2 * math.pi * (i + 0.5) / n
        t = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        times.append(time.perf_counter() - t)
    conn.send(times)


def run_bare(obj_path: str, hdri: str, n: int) -> list[float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    scratch = fast_scratch_dir()
    proc = ctx.Process(target=bare_loop, args=(child, obj_path, hdri, n, str(scratch)))
    proc.start()
    times = parent.recv()  # trusted: our own child process
    proc.join()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=200, help="renders for the memory measurement")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=20)
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
    bare_t: list[float] = []
    n = args.block_size
    with RenderProcess(SETTINGS, fast_scratch_dir()) as worker:
        worker.render(job(0, n))  # scene sync, not timed (the bare loop also skips its first render)
        for block in range(args.blocks):
            bare_t += run_bare(str(mug.path), str(city.path), n)
            for i in range(n):
                t = time.perf_counter()
                worker.render(job(i, n))
                ours_t.append(time.perf_counter() - t)
            print(f"  block {block + 1}: bare {statistics.median(bare_t[-n:]) * 1000:.1f} ms/img, "
                  f"threedb {statistics.median(ours_t[-n:]) * 1000:.1f} ms/img", flush=True)
    bare_med, ours_med = statistics.median(bare_t), statistics.median(ours_t)
    print(f"seconds per image (median of {len(ours_t)}): bare bpy {bare_med:.4f}, threedb {ours_med:.4f}")
    print(f"RATIO threedb / bare bpy = {ours_med / bare_med:.3f}  (target <= 1.10)")

    for label, max_jobs in (("no recycling", 10 ** 9), ("recycling every 100 jobs", 100)):
        settings = SETTINGS.model_copy(update={"max_jobs_per_worker": max_jobs})
        rss = []
        with RenderProcess(settings, fast_scratch_dir()) as worker:
            for i in range(args.renders):
                rss.append(worker.render(job(i, args.renders)).meta["rss_bytes"])
        growth = (rss[-1] - rss[0]) / 2 ** 20
        print(f"worker RSS over {args.renders} renders ({label}): first {rss[0] / 2 ** 20:.0f} MiB, "
              f"peak {max(rss) / 2 ** 20:.0f} MiB, last {rss[-1] / 2 ** 20:.0f} MiB, "
              f"growth {growth:+.1f} MiB (target < 50 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
