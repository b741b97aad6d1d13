"""Occlusion: an occluder between the camera and the object hides a requested fraction of it.

The original 3DB placed an out-of-distribution object "to occlude a ratio" but never measured the
ratio it achieved. Here the occluded fraction is computed from geometry before rendering and the
occluder is placed to hit it:

1. The object's silhouette is rasterised with the render camera's projection (all its triangles,
   ``pass_index`` 1 meshes, liquids included) on a grid of about 256 samples across the image (4
   samples per pixel side at 64 px). Only the part inside the frame counts.
2. The occluder (scaled so that its projected bounding radius is ``occluder_size`` times the
   silhouette's radius) stands upright facing the camera on the plane perpendicular to the view
   axis at ``distance`` of the way from the camera to the object's centre (nearer if it would
   otherwise touch the object), and slides along a straight line from outside the silhouette, on
   side ``direction``, towards the silhouette's centroid.
3. The slide offset is bisected until ``|occluder silhouette ∩ object silhouette| / |object
   silhouette|`` equals ``occlusion_ratio`` (to one grid sample). If the occluder centred on the
   object cannot hide enough, it is enlarged (x1.3, up to 8 times) first.

``direction`` is the side of the image the occluder comes in from, in 45° steps counter-clockwise:
0 right, 1 top-right, 2 top, 3 top-left, 4 left, 5 bottom-left, 6 bottom, 7 bottom-right.

**Achieved ratio and tolerance.** ``scene.report[<instance name>]`` (returned as
``meta["controls_report"]``) holds ``occlusion_ratio`` (the fraction computed on the grid),
``requested``, ``tolerance``, the occluder and its final ``occluder_size``. The fraction measured on
the rendered ``instance`` pass — ``1 - (object pixels with the occluder) / (object pixels without
it)`` — agrees with the requested one within ``TOLERANCE`` = 0.05 absolute (pixel quantisation of
the object's edge at small resolutions, Cycles' jittered first-sample object index and, with depth
of field, the blurred occluder edge make up the difference; it shrinks with resolution). Place this
control **after** every control that moves the camera or the object (camera, orientation, position,
scale, ...): it measures the scene as it is when it is applied. If the object is not visible,
nothing is placed and the report says ``occlusion_ratio: 0.0`` with ``visible: false``.

Occluders: generated primitives ``box``, ``sphere``, ``cylinder`` (neutral grey), or the default
pack's meshes ``duck``, ``teddy``, ``bunny``, ``soccer_ball``, ``torus`` with their own materials.
The occluder's meshes get ``pass_index`` 2 (``instance`` pass value 2). Undo deletes its objects,
meshes, materials and images.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from threedb.controls.base import SceneControl
from threedb.controls.params import Param
from threedb.controls.scene._mask import (INSERTED_PROP, CameraProjection, grid_scale, merged_triangles,
                                          object_meshes, rasterize)

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene

PRIMITIVES = ("box", "sphere", "cylinder")
PACK_OCCLUDERS = ("duck", "teddy", "bunny", "soccer_ball", "torus")
OCCLUDERS = (*PRIMITIVES, *PACK_OCCLUDERS)
#: Documented agreement between the requested ratio and the one measured on the instance pass.
TOLERANCE = 0.05
OCCLUDER_PASS_INDEX = 2
OCCLUDER_NAME = "threedb_occluder"
GRID_SAMPLES = 256
BISECTION_STEPS = 24
MAX_GROWTH = 8


class OcclusionControl(SceneControl):
    """Places an occluder (a primitive or a default-pack mesh, instance pass value 2) between the
    camera and the object so that it hides ``occlusion_ratio`` of the object's silhouette, coming in
    from side ``direction``; the achieved ratio (computed by rasterising the projected geometry) is
    reported in meta["controls_report"][<name>]["occlusion_ratio"], and the ratio measured on the
    rendered instance pass agrees within 0.05. Apply it after the camera and object controls."""

    name = "occlusion"
    params = (
        Param("occlusion_ratio", "float", 0.3, "fraction of the object's silhouette to hide", low=0.01, high=0.8,
              unit="fraction"),
        Param("direction", "int", 0, "image side the occluder comes from: 0 right, 1 top-right, 2 top, ..."
              " counter-clockwise to 7 bottom-right", low=0, high=7),
        Param("occluder", "choice", "box", "occluding object", choices=OCCLUDERS),
        Param("occluder_size", "float", 1.0, "occluder's projected radius relative to the object's"
              " (enlarged if too small for the ratio)", low=0.25, high=2.0, unit="x"),
        Param("distance", "float", 0.35, "where the occluder stands between the camera (0) and the object (1)",
              low=0.1, high=0.9, unit="fraction"),
    )

    def __init__(self, instance_name: str | None = None) -> None:
        super().__init__(instance_name)
        self._created: dict[str, list[Any]] | None = None

    # ----------------------------------------------------------------- apply / undo
    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        v = {**self.defaults(), **values}
        ratio = float(self.param("occlusion_ratio").check_value(v["occlusion_ratio"]))
        direction = int(self.param("direction").check_value(v["direction"]))
        occluder = str(self.param("occluder").check_value(v["occluder"]))
        size = float(self.param("occluder_size").check_value(v["occluder_size"]))
        distance = float(self.param("distance").check_value(v["distance"]))
        report = getattr(scene, "report", None)
        if report is None:
            report = scene.report = {}
        entry: dict[str, Any] = {"requested": ratio, "tolerance": TOLERANCE, "occluder": occluder,
                                 "direction": direction}
        report[self.instance_name] = entry
        self._created = None

        bpy.context.view_layer.update()
        proj = CameraProjection(scene)
        scale = grid_scale(proj.size, GRID_SAMPLES)
        targets = [o for o in object_meshes(scene, include_inserted=True)
                   if o.pass_index == 1 and not o.hide_render]
        verts, tris = merged_triangles(targets)
        uv, depth = proj.project(verts)
        in_front = tris[(depth[tris] > _clip_start(scene)).all(axis=1)]
        obj_mask = rasterize(uv, in_front, proj.size, scale)
        area = int(obj_mask.sum())
        if area == 0:
            entry.update(occlusion_ratio=0.0, visible=False, occluder_size=size)
            return

        rows, cols = np.nonzero(obj_mask)
        samples = np.column_stack([cols + 0.5, rows + 0.5]) / scale  # pixel coordinates
        centroid = samples.mean(axis=0)
        obj_radius_px = float(np.linalg.norm(samples - centroid, axis=1).max()) + 1.0 / scale
        obj_near = float(depth[np.unique(in_front)].min()) if len(in_front) else float(depth.min())
        centre_depth = float(proj.to_camera(np.array([list(scene.root.matrix_world.translation)]))[0, 2])
        centre_depth = max(centre_depth, obj_near)

        self._created = _create_occluder(scene, occluder)
        try:
            local_verts, local_tris = self._created["geometry"]
            angle = direction * math.pi / 4.0
            u = np.array([math.cos(angle), -math.sin(angle)])  # image y points down
            right, down, forward = proj.axes
            # Occluder axes: x -> image right, z (up) -> image up, -y (front) -> towards the camera.
            rot = np.column_stack([right, forward, -down])

            def placement(size_factor: float, s: float) -> tuple[np.ndarray, float]:
                rho = size_factor * obj_radius_px
                k = min(rho / proj.focal_px, 0.8)  # world radius / depth
                d = min(distance * centre_depth, 0.95 * obj_near / (1.0 + k))
                d = max(d, _clip_start(scene) * 2.0 / max(1e-6, 1.0 - k))
                sigma = k * d
                # Far enough that the occluder (radius sigma at depth d, nearest point at d - sigma)
                # misses the silhouette at s = 0.
                travel = obj_radius_px + rho / (1.0 - k) + 2.0
                c = centroid + u * (1.0 - s) * travel
                cx, cy = proj.K[0, 2], proj.K[1, 2]
                pos = (proj.position + forward * d + right * ((c[0] - cx) / proj.focal_px * d)
                       + down * ((c[1] - cy) / proj.focal_px * d))
                return pos, sigma

            def coverage(size_factor: float, s: float) -> float:
                pos, sigma = placement(size_factor, s)
                world = local_verts @ (rot * sigma).T + pos
                occ_uv, _ = proj.project(world)
                occ_mask = rasterize(occ_uv, local_tris, proj.size, scale)
                return float((occ_mask & obj_mask).sum()) / area

            factor = size
            full = coverage(factor, 1.0)
            for _ in range(MAX_GROWTH):
                if full >= ratio:
                    break
                factor *= 1.3
                full = coverage(factor, 1.0)
            if full < ratio:  # cannot be reached (a huge object or tiny occluder): cover what we can
                s_best, achieved = 1.0, full
            else:
                lo, hi, f_hi = 0.0, 1.0, full
                if coverage(factor, 0.0) >= ratio:  # should not happen: starts outside the silhouette
                    hi, f_hi = 0.0, coverage(factor, 0.0)
                for _ in range(BISECTION_STEPS):
                    if hi - lo < 1e-5:
                        break
                    mid = (lo + hi) / 2.0
                    f = coverage(factor, mid)
                    if f >= ratio:
                        hi, f_hi = mid, f
                    else:
                        lo = mid
                f_lo = coverage(factor, lo)
                s_best, achieved = (lo, f_lo) if abs(f_lo - ratio) < abs(f_hi - ratio) else (hi, f_hi)
            pos, sigma = placement(factor, s_best)
            empty = self._created["root"][0]
            empty.matrix_world = _matrix(rot * sigma, pos)
            entry.update(occlusion_ratio=round(achieved, 4), visible=True, occluder_size=round(factor, 4),
                         occluder_depth=round(float(np.dot(pos - proj.position, forward)), 4))
        except BaseException:
            self.undo(scene)
            raise

    def undo(self, scene: "RenderScene") -> None:
        created, self._created = self._created, None
        if created is not None:
            _remove(created)


def _clip_start(scene: "RenderScene") -> float:
    return float(scene.camera.data.clip_start)


def _matrix(linear: np.ndarray, translation: np.ndarray) -> Any:
    from mathutils import Matrix

    m = np.eye(4)
    m[:3, :3], m[:3, 3] = linear, translation
    return Matrix(m.tolist())


def _create_occluder(scene: "RenderScene", kind: str) -> dict[str, Any]:
    """Make the occluder: meshes under one empty, normalised to bounding radius 1 about their centre.

    Returns ``{"root": [empty], "objects", "meshes", "materials", "images", "geometry": (verts, tris)}``
    (everything it created, for undo; geometry in the empty's coordinates). Cleans up if it fails.
    """
    import bpy
    from mathutils import Matrix

    before = {"meshes": set(bpy.data.meshes), "materials": set(bpy.data.materials),
              "images": set(bpy.data.images), "objects": set(bpy.data.objects)}
    created: dict[str, Any] = {"root": []}

    def collect() -> None:
        created["objects"] = [o for o in bpy.data.objects if o not in before["objects"]]
        for key in ("meshes", "materials", "images"):
            created[key] = [x for x in getattr(bpy.data, key) if x not in before[key]]

    try:
        if kind in PRIMITIVES:
            objs = [_primitive(kind)]
            scene.scene.collection.objects.link(objs[0])
        else:
            objs = _import_pack_mesh(scene, kind)
        bpy.context.view_layer.update()
        worlds = [o.matrix_world.copy() for o in objs]
        for obj, world in zip(objs, worlds):  # bake every transform into the (new, unshared) mesh data
            if obj.type == "MESH":
                obj.data.transform(world)
            obj.parent = None
            obj.matrix_world = Matrix.Identity(4)
        meshes = [o for o in objs if o.type == "MESH"]
        verts, tris = merged_triangles(meshes, to_space=np.eye(4))
        if len(verts) == 0:
            raise ValueError(f"occluder {kind!r} has no mesh")
        centre = (verts.min(axis=0) + verts.max(axis=0)) / 2.0
        radius = float(np.linalg.norm(verts - centre, axis=1).max()) or 1.0
        norm = np.eye(4)
        norm[:3, :3] /= radius
        norm[:3, 3] = -centre / radius
        for obj in meshes:
            obj.data.transform(Matrix(norm.tolist()))
        empty = bpy.data.objects.new(OCCLUDER_NAME, None)
        scene.scene.collection.objects.link(empty)
        created["root"] = [empty]
        for obj in objs:
            obj.parent = empty
            obj.matrix_parent_inverse = Matrix.Identity(4)
            obj.pass_index = OCCLUDER_PASS_INDEX
            obj[INSERTED_PROP] = True
        if kind in PRIMITIVES:
            mat = bpy.data.materials.new(f"{OCCLUDER_NAME}_material")
            bsdf = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
            bsdf.inputs["Base Color"].default_value = (0.35, 0.35, 0.35, 1.0)
            bsdf.inputs["Roughness"].default_value = 0.6
            meshes[0].data.materials.append(mat)
        created["geometry"] = ((verts - centre) / radius, tris)
    except BaseException:
        collect()
        _remove(created)
        raise
    collect()
    return created


def _remove(created: dict[str, Any]) -> None:
    """Delete everything :func:`_create_occluder` made."""
    import bpy

    for obj in created.get("objects", ()):
        bpy.data.objects.remove(obj, do_unlink=True)
    for key in ("meshes", "materials", "images"):
        collection = getattr(bpy.data, key)
        for item in created.get(key, ()):
            collection.remove(item)


def _primitive(kind: str) -> Any:
    import bmesh
    import bpy

    bm = bmesh.new()
    if kind == "box":
        bmesh.ops.create_cube(bm, size=2.0)
    elif kind == "sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=1.0)
    else:
        bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=1.0, radius2=1.0, depth=2.0)
    mesh = bpy.data.meshes.new(f"{OCCLUDER_NAME}_{kind}")
    bm.to_mesh(mesh)
    bm.free()
    if kind != "box":
        mesh.shade_smooth()
    return bpy.data.objects.new(f"{OCCLUDER_NAME}_{kind}", mesh)


def _import_pack_mesh(scene: "RenderScene", uid: str) -> list[Any]:
    import bpy
    from mathutils import Matrix

    from threedb.sim.assets import load_catalog

    asset = load_catalog("default").objects[uid]
    axes = {"forward_axis": "Y", "up_axis": "Z"} if asset.up_axis == "Z" \
        else {"forward_axis": "NEGATIVE_Z", "up_axis": "Y"}
    before = set(bpy.data.objects)
    bpy.ops.wm.obj_import(filepath=str(asset.path), **axes)
    objs = [o for o in bpy.data.objects if o not in before]
    for obj in objs:
        if obj.name not in scene.scene.collection.all_objects:
            scene.scene.collection.objects.link(obj)
    scale = Matrix.Diagonal((*asset.axis_scale, 1.0))
    for obj in objs:
        if obj.parent is None:
            obj.matrix_world = scale @ obj.matrix_world
    return objs
