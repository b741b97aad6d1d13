"""The USDZ export child: ``python -m threedb.companion.usdz_worker REQUEST.json RESULT.json`` (imports bpy).

For each job of the request it builds the job's scene as a render worker does (environment,
object, framing, the job's scene controls in config order), exports the object's hierarchy to a
USDZ with Blender's USD exporter (metres, Y-up, materials as UsdPreviewSurface with their textures),
lifted vertically so that its lowest point rests on y = 0, reports the poses, then undoes the
controls. Only :mod:`threedb.companion.usdz` starts it.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Mapping

#: Prim the exported object hangs under (USD's defaultPrim of the file).
ROOT_PRIM = "/threedb"


def _matrix(m: Any) -> list[list[float]]:
    return [list(row) for row in m]


def _world_bounds(objects: list[Any]) -> tuple[list[float], list[float]]:
    import numpy as np

    points = []
    for obj in objects:
        if obj.type != "MESH" or not len(obj.data.vertices):
            continue
        co = np.empty(len(obj.data.vertices) * 3, dtype=np.float64)
        obj.data.vertices.foreach_get("co", co)
        m = np.array(obj.matrix_world, dtype=np.float64)
        points.append(co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3])
    allp = np.concatenate(points)
    return allp.min(axis=0).tolist(), allp.max(axis=0).tolist()


def export_job(scene: Any, job: Mapping[str, Any], usdz_path: str) -> dict[str, Any]:
    """Export ``job``'s object in its rendered pose to ``usdz_path``; returns the exported poses."""
    import bpy

    from threedb.controls.base import SceneControl
    from threedb.controls.registry import import_control

    scene.report = {}
    scene.set_environment(job["environment"])
    scene.set_object(job["object"])
    scene.frame_object()
    normalisation_scale = float(scene.root.scale[0])  # before any control: source units -> metres
    applied = []
    try:
        for entry in job.get("controls", ()):
            control = import_control(entry["ref"])(entry["name"])
            if isinstance(control, SceneControl):
                control.apply(scene, entry.get("values", {}))
                applied.append(control)
        bpy.context.view_layer.update()
        objects = [scene.root, *scene.root.children_recursive]
        lo, hi = _world_bounds(objects)
        camera_to_world, root_to_world = _matrix(scene.camera.matrix_world), _matrix(scene.root.matrix_world)
        # AR Quick Look puts the file's y = 0 on the detected floor: lift the object onto it for the
        # export only (the root has no parent, so its location is its world translation).
        lift = -lo[2]
        location = tuple(scene.root.location)
        scene.root.location.z += lift
        bpy.context.view_layer.update()
        for obj in scene.scene.objects:
            obj.select_set(False)
        for obj in objects:
            obj.select_set(True)
        result = bpy.ops.wm.usd_export(
            filepath=usdz_path, selected_objects_only=True, export_animation=False,
            export_cameras=False, export_lights=False, convert_world_material=False,
            export_materials=True, generate_preview_surface=True, export_textures_mode="NEW",
            convert_orientation=True, export_global_forward_selection="NEGATIVE_Z",
            export_global_up_selection="Y", convert_scene_units="METERS", root_prim_path=ROOT_PRIM,
            export_custom_properties=False, xform_op_mode="MAT", evaluation_mode="RENDER")
        scene.root.location = location
        bpy.context.view_layer.update()
        if "FINISHED" not in result or not Path(usdz_path).is_file():
            raise RuntimeError(f"Blender's USD exporter did not write {usdz_path} ({result})")
        return {"root_to_world": root_to_world, "camera_to_world": camera_to_world,
                "normalisation_scale": normalisation_scale, "bounds_world": [lo, hi], "lift": lift}
    finally:
        for control in reversed(applied):
            control.undo(scene)


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    request = json.loads(Path(request_path).read_text())
    # Blender prints progress on stdout; keep it out of the caller's output.
    log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    results: dict[str, Any] = {}
    try:
        from threedb.sim.render.scene import RenderScene
        from threedb.sim.render.settings import RenderSettings

        scene = RenderScene(RenderSettings.model_validate(request["settings"]), request["scratch"])
        for item in request["items"]:
            job = item["job"]
            try:
                results[job["id"]] = export_job(scene, job, item["usdz"])
            except Exception as exc:  # the scene may be half changed: stop here, report this job
                results[job["id"]] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
                break
    except Exception as exc:
        results["__setup__"] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
