"""A comparable snapshot of the Blender scene state, to check that controls undo exactly.

Covers objects (transforms, visibility, parenting, pass indices, material slots, modifiers),
object data (mesh sizes, light and camera settings), materials and the world (node trees with
every input's default value and every link), images in use, and the render settings controls may
touch. Values are rounded so that float round trips through Euler/matrix conversions compare equal.
"""
from __future__ import annotations

from typing import Any

import bpy

_DIGITS = 5
_RENDER_IMAGES = frozenset({"Render Result", "Viewer Node"})


def _value(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, _DIGITS)
    if isinstance(v, (int, bool, str)) or v is None:
        return v
    if hasattr(v, "name") and isinstance(getattr(v, "name"), str):  # an ID (image, object, ...)
        return f"<{type(v).__name__} {v.name}>"
    try:
        return [_value(x) for x in v]
    except TypeError:
        return repr(v)


def _node_tree(tree: Any) -> dict[str, Any] | None:
    if tree is None:
        return None
    nodes = {}
    for node in tree.nodes:
        inputs = {f"{i}:{s.identifier}": _value(s.default_value) for i, s in enumerate(node.inputs)
                  if hasattr(s, "default_value")}
        extra = {k: _value(getattr(node, k)) for k in ("image", "blend_type", "data_type", "operation",
                                                       "interpolation", "projection") if hasattr(node, k)}
        nodes[node.name] = {"type": node.bl_idname, "inputs": inputs, **extra}
    links = sorted(f"{l.from_node.name}.{l.from_socket.identifier}->{l.to_node.name}.{l.to_socket.identifier}"
                   for l in tree.links)
    return {"nodes": nodes, "links": links}


def _object(obj: Any) -> dict[str, Any]:
    state = {"type": obj.type, "data": obj.data.name if obj.data else None,
             "parent": obj.parent.name if obj.parent else None,
             "matrix_world": _value([list(r) for r in obj.matrix_world]),
             "matrix_parent_inverse": _value([list(r) for r in obj.matrix_parent_inverse]),
             "hide_render": obj.hide_render, "pass_index": obj.pass_index,
             "is_shadow_catcher": obj.is_shadow_catcher, "is_holdout": obj.is_holdout,
             "materials": [s.material.name if s.material else None for s in obj.material_slots],
             "modifiers": [(m.name, m.type) for m in obj.modifiers],
             "visible_camera": obj.visible_camera}
    if obj.type == "MESH":
        state["mesh"] = (len(obj.data.vertices), len(obj.data.polygons), [u.name for u in obj.data.uv_layers])
    elif obj.type == "LIGHT":
        light = obj.data
        state["light"] = {k: _value(getattr(light, k)) for k in ("type", "energy", "color", "shadow_soft_size")
                          if hasattr(light, k)}
    elif obj.type == "CAMERA":
        cam = obj.data
        state["camera"] = {"lens": _value(cam.lens), "sensor": _value(cam.sensor_width),
                           "shift": _value((cam.shift_x, cam.shift_y)), "use_dof": cam.dof.use_dof,
                           "focus": _value(cam.dof.focus_distance), "fstop": _value(cam.dof.aperture_fstop),
                           "clip": _value((cam.clip_start, cam.clip_end))}
    return state


def scene_snapshot(scene: Any = None) -> dict[str, Any]:
    """The state of ``scene`` (default: the current scene) as plain, comparable data."""
    scene = scene or bpy.context.scene
    bpy.context.view_layer.update()  # matrix_world is only recomputed on a depsgraph update
    render, cycles = scene.render, scene.cycles
    return {
        "objects": {obj.name: _object(obj) for obj in scene.objects},
        "materials": {m.name: _node_tree(m.node_tree) for m in bpy.data.materials if m.users},
        "world": {"name": scene.world.name if scene.world else None,
                  "tree": _node_tree(scene.world.node_tree) if scene.world else None},
        "images": sorted(i.name for i in bpy.data.images if i.users and i.name != "Render Result"),
        # Counts catch data a control unlinked from the scene but left behind in bpy.data.
        # ('Render Result' and 'Viewer Node' images come and go with rendering itself.)
        "datablocks": {kind: sum(1 for d in getattr(bpy.data, kind) if d.name not in _RENDER_IMAGES)
                       for kind in ("objects", "meshes", "lights", "cameras", "materials", "images",
                                    "node_groups", "textures", "worlds")},
        "render": {"resolution": (render.resolution_x, render.resolution_y), "film_transparent": render.film_transparent,
                   "samples": cycles.samples, "denoise": cycles.use_denoising,
                   "denoiser": cycles.denoiser if cycles.use_denoising else None,
                   "adaptive": (cycles.use_adaptive_sampling, _value(cycles.adaptive_threshold)),
                   "camera": scene.camera.name if scene.camera else None,
                   "view_transform": scene.view_settings.view_transform},
    }


def snapshot_diff(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """Key paths whose values differ between two snapshots (empty when equal)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in before:
                out.append(f"{path} (added)")
            elif key not in after:
                out.append(f"{path} (removed)")
            else:
                out += snapshot_diff(before[key], after[key], path)
        return out
    return [] if before == after else [f"{prefix}: {before!r} -> {after!r}"[:300]]
