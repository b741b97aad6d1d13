"""Liquid: fills an open container (the paper's coffee-mug case study, section 3.3.4) with a mix
of water, milk and coffee.

The cavity is measured from the object's geometry in its own (root) coordinates, so the liquid
follows every later or earlier transform of the object (orientation, scale, position):

* the container's axis is the centre of its rim (the vertices in the top 10% of its height; a
  handle below the rim does not shift it);
* a ray cast down that axis from above finds the inner floor; a cavity shallower than 15% of the
  object's height means the object is **not an open container, and the control raises** a
  ``ValueError`` naming the object (the job fails with that message) — there is no bounding-cylinder
  fallback, because liquid floating over a solid object would silently corrupt an experiment;
* at 12 heights between the floor and the fill height, 64 horizontal rays from the axis find the
  inner wall; the liquid is the solid of revolution through those wall points (shrunk by 1%), so it
  fits tapered cups and bowls, and not only cylinders. If more than a quarter of the rays at some
  height escape (a hole in the wall), the control raises too.

``fill_level`` is the fraction of the inner height (floor to rim) filled; 0 adds nothing. The mix
is ``ratio_coffee`` coffee, ``ratio_milk`` milk and the rest water; if the two ratios add up to more
than 1 they are rescaled to sum to 1 (no water). The material is one Principled BSDF whose
parameters follow the mix:

* colour: the fraction-weighted geometric mean of the three liquids' colours (Beer-Lambert
  absorption: a little coffee darkens a lot of milk or water, as in reality);
* transmission (clear, IOR 1.333 for water): ``(1 - milk) ** 6`` — milk is turbid, so even 10% milk
  clouds water; the opaque rest is subsurface scattering (milk's IOR 1.35, red scatters furthest);
* smooth (roughness 0.03), as a liquid surface at rest.

The liquid mesh is parented to the object root and belongs to the object: ``pass_index`` 1, so the
``mask``/``instance`` passes include it (a filled mug is still the mug). It is rigid: when the object
is tilted (orientation control) the surface tilts with it instead of levelling out, so keep
rotations about the horizontal axes small when the liquid matters. Undo deletes the mesh, its
object and its material. ``scene.report[<instance name>]`` gets the fractions used and the fill
height.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from threedb.controls.base import SceneControl
from threedb.controls.params import Param
from threedb.controls.scene._mask import INSERTED_PROP, matrix_np, merged_triangles, object_meshes

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene

LIQUID_NAME = "threedb_liquid"
LEVELS = 12
SEGMENTS = 64
#: Linear RGB colours of the pure liquids (as seen through a glass' worth of depth).
WATER = np.array([0.80, 0.90, 0.97])
MILK = np.array([0.86, 0.83, 0.76])
COFFEE = np.array([0.045, 0.018, 0.007])


class NotAContainer(ValueError):
    """The object has no open cavity to fill."""


class LiquidControl(SceneControl):
    """Fills the object, an open container such as the mug, to fill_level of its inner height with
    a mix of coffee, milk and (the rest) water; objects without an open cavity are refused with an
    error (the job fails). The liquid belongs to the object (mask) and moves with it."""

    name = "liquid"
    params = (
        Param("ratio_coffee", "float", 0.0, "fraction of coffee in the liquid", low=0.0, high=1.0, unit="fraction"),
        Param("ratio_milk", "float", 0.0, "fraction of milk in the liquid (the rest is water)", low=0.0, high=1.0,
              unit="fraction"),
        Param("fill_level", "float", 0.8, "filled fraction of the container's inner height", low=0.0, high=1.0,
              unit="fraction"),
    )

    def __init__(self, instance_name: str | None = None) -> None:
        super().__init__(instance_name)
        self._created: tuple[Any, Any, Any] | None = None
        self._cavity_cache: tuple[str | None, Any] | None = None

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        v = {**self.defaults(), **values}
        self._created = None
        coffee, milk = float(v["ratio_coffee"]), float(v["ratio_milk"])
        if coffee + milk > 1.0:
            coffee, milk = coffee / (coffee + milk), milk / (coffee + milk)
        water = max(0.0, 1.0 - coffee - milk)
        fill = float(v["fill_level"])
        report = getattr(scene, "report", None)
        if report is None:
            report = scene.report = {}
        if fill <= 0.0:
            report[self.instance_name] = {"water": round(water, 6), "milk": round(milk, 6), "coffee": round(coffee, 6),
                                          "fill_level": 0.0, "fill_height": 0.0}
            return
        cavity = self._cavity(scene)
        verts, faces = cavity.liquid_mesh(fill)
        mesh = bpy.data.meshes.new(LIQUID_NAME)
        mesh.from_pydata(verts.tolist(), [], faces)
        mesh.validate()
        uv = mesh.uv_layers.new(name="threedb_uv")
        loop_vertex = np.empty(len(mesh.loops), dtype=np.int32)
        mesh.loops.foreach_get("vertex_index", loop_vertex)
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        planar = (verts[:, :2] - lo[:2]) / np.maximum(hi[:2] - lo[:2], 1e-12)
        uv.data.foreach_set("uv", planar[loop_vertex].astype(np.float32).ravel())
        material = _liquid_material(f"{LIQUID_NAME}_{self.instance_name}", water, milk, coffee)
        mesh.materials.append(material)
        obj = bpy.data.objects.new(LIQUID_NAME, mesh)
        obj[INSERTED_PROP] = True
        obj.pass_index = 1  # part of the object (a filled mug is still the mug)
        scene.scene.collection.objects.link(obj)
        obj.parent = scene.root
        obj.matrix_parent_inverse.identity()
        self._created = (obj, mesh, material)
        height = float(cavity.fill_height(fill) * cavity.world_unit(scene))
        report[self.instance_name] = {"water": round(water, 6), "milk": round(milk, 6), "coffee": round(coffee, 6),
                                      "fill_level": fill, "fill_height": round(height, 5)}

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        if self._created is None:
            return
        obj, mesh, material = self._created
        self._created = None
        bpy.data.objects.remove(obj, do_unlink=True)
        bpy.data.meshes.remove(mesh)
        bpy.data.materials.remove(material)

    def _cavity(self, scene: "RenderScene") -> "Cavity":
        key = scene.object_key
        if self._cavity_cache is None or self._cavity_cache[0] != key or key is None:
            self._cavity_cache = (key, Cavity.measure(scene))
        return self._cavity_cache[1]


class Cavity:
    """The inner shape of an open container, in the object's root coordinates (z up)."""

    def __init__(self, bvh: Any, centre: np.ndarray, floor: float, top: float, name: str) -> None:
        self.bvh, self.centre, self.floor, self.top, self.name = bvh, centre, floor, top, name

    @classmethod
    def measure(cls, scene: "RenderScene") -> "Cavity":
        import bpy
        from mathutils import Vector
        from mathutils.bvhtree import BVHTree

        bpy.context.view_layer.update()
        meshes = object_meshes(scene)
        name = Path(scene.object_key.split("|")[0]).name if scene.object_key else "the object"
        root_inv = np.linalg.inv(matrix_np(scene.root.matrix_world))
        verts, tris = merged_triangles(meshes, to_space=root_inv)
        if len(tris) == 0:
            raise NotAContainer(f"liquid: {name} has no triangles to hold a liquid")
        bvh = BVHTree.FromPolygons(verts.tolist(), tris.tolist(), all_triangles=True)
        z_lo, z_hi = float(verts[:, 2].min()), float(verts[:, 2].max())
        height = z_hi - z_lo
        rim = verts[verts[:, 2] >= z_hi - 0.1 * height]
        centre = (rim[:, :2].min(axis=0) + rim[:, :2].max(axis=0)) / 2.0
        hit = bvh.ray_cast(Vector((*centre, z_hi + 0.01 * height)), Vector((0.0, 0.0, -1.0)))
        if hit[0] is None:
            raise NotAContainer(f"liquid: {name} is not an open container (nothing below the centre of its top)")
        floor = float(hit[0].z)
        if z_hi - floor < 0.15 * height:
            raise NotAContainer(f"liquid: {name} is not an open container: its top is closed (the cavity under"
                                f" the top centre is {100 * (z_hi - floor) / height:.0f}% of its height; at"
                                " least 15% needed); use the liquid control only with cups, mugs, bowls")
        cavity = cls(bvh, centre, floor, z_hi, name)
        cavity.wall(floor + 0.5 * (z_hi - floor))  # raises if the wall is open at mid depth
        return cavity

    @property
    def inner_top(self) -> float:
        return self.top - 0.01 * (self.top - self.floor)

    def fill_height(self, fill: float) -> float:
        """Height of the liquid's surface above the floor, in root units."""
        return fill * (self.inner_top - self.floor)

    def world_unit(self, scene: "RenderScene") -> float:
        """World units per root unit (the object's normalisation scale)."""
        return float(np.cbrt(abs(np.linalg.det(matrix_np(scene.root.matrix_world)[:3, :3]))))

    def wall(self, z: float) -> np.ndarray:
        """Distance from the axis to the inner wall at height ``z`` in SEGMENTS directions."""
        from mathutils import Vector

        angles = np.arange(SEGMENTS) * (2 * math.pi / SEGMENTS)
        origin = Vector((*self.centre, z))
        dist = np.full(SEGMENTS, np.nan)
        for i, a in enumerate(angles):
            hit = self.bvh.ray_cast(origin, Vector((math.cos(a), math.sin(a), 0.0)))
            if hit[0] is not None:
                dist[i] = hit[3]
        missing = np.isnan(dist)
        if missing.mean() > 0.25:
            raise NotAContainer(f"liquid: {self.name} is not a closed-walled container: {missing.sum()} of"
                                f" {SEGMENTS} horizontal rays from its axis escape at height {z:.3g}")
        if missing.any():
            dist[missing] = np.nanmin(dist)
        return dist

    def liquid_mesh(self, fill: float) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Vertices (root coordinates) and faces of the liquid filled to ``fill`` of the inner height."""
        depth = self.inner_top - self.floor
        bottom = self.floor + 0.005 * depth
        surface = self.floor + max(self.fill_height(fill), 0.01 * depth)
        # Walls sampled from just above the floor (its fillet) up to the surface.
        heights = np.linspace(self.floor + 0.02 * depth, surface, LEVELS)
        heights[0] = min(heights[0], surface)
        angles = np.arange(SEGMENTS) * (2 * math.pi / SEGMENTS)
        ring_dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        rings = []
        for k, z in enumerate(heights):
            r = self.wall(z) * 0.99
            z_ring = bottom if k == 0 else z
            rings.append(np.column_stack([self.centre + ring_dirs * r[:, None], np.full(SEGMENTS, z_ring)]))
        verts = np.concatenate([*rings, [[*self.centre, bottom]], [[*self.centre, surface]]])
        n = SEGMENTS
        bottom_centre, top_centre = LEVELS * n, LEVELS * n + 1
        faces: list[tuple[int, ...]] = []
        for k in range(LEVELS - 1):
            for i in range(n):
                j = (i + 1) % n
                faces.append((k * n + i, k * n + j, (k + 1) * n + j, (k + 1) * n + i))  # outward
        top = (LEVELS - 1) * n
        for i in range(n):
            j = (i + 1) % n
            faces.append((bottom_centre, j, i))          # floor cap, facing down
            faces.append((top_centre, top + i, top + j))  # surface, facing up
        return verts, faces


def _liquid_material(name: str, water: float, milk: float, coffee: float) -> Any:
    import bpy

    colour = np.exp(water * np.log(WATER) + milk * np.log(MILK) + coffee * np.log(COFFEE))
    clear = (1.0 - milk) ** 6
    mat = bpy.data.materials.new(name)
    nodes = mat.node_tree.nodes
    bsdf = next(n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    bsdf.inputs["Base Color"].default_value = (*map(float, colour), 1.0)
    bsdf.inputs["Roughness"].default_value = 0.03
    bsdf.inputs["IOR"].default_value = 1.333 + 0.017 * (1.0 - clear)
    bsdf.inputs["Transmission Weight"].default_value = float(clear)
    bsdf.inputs["Subsurface Weight"].default_value = float(1.0 - clear)
    bsdf.inputs["Subsurface Radius"].default_value = (1.0, 0.8, 0.6)
    # Milk scatters light over about a millimetre: ~0.01 scene units for a ~10 cm object normalised to 1.
    bsdf.inputs["Subsurface Scale"].default_value = 0.01
    return mat
