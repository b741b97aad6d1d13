"""Light: an extra coloured point, area or sun light aimed at the object."""
from __future__ import annotations

import colorsys
import math
from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene

#: Direction used when (dir_x, dir_y, dir_z) is the zero vector: straight above the object.
_UP = (0.0, 0.0, 1.0)


class LightControl(SceneControl):
    """Adds a coloured light (point, area or sun) at ``distance`` from the object's centre in direction
    (dir_x, dir_y, dir_z), aimed at the object, on top of the HDRI's lighting.

    ``intensity`` is a power in watts (Blender's light power) for point and area lights. A sun has no
    position: it gets the irradiance that a point light of ``intensity`` W would give at the
    object's centre from ``distance``, i.e. strength ``intensity / (4 pi distance^2)`` W/m^2, so point
    and sun lights with the same parameters are equally bright (an area light sends its power forward
    only: about 4x the on-axis irradiance of a point light of the same power). ``distance`` is in scene units
    (normalised objects are 1 unit across, ``assets.object_size``). The colour is (H, S, V);
    V scales the emission. ``size`` is the side of the square area light, the diameter of the point
    light (softer shadows when larger) and is ignored by the sun. The light is invisible to camera
    rays (it lights the object but never shows in the image). Undo deletes the light object and its
    data-block, so nothing accumulates over many jobs.
    """

    name = "light"
    params = (
        Param("kind", "choice", "point", "type of light", choices=("point", "area", "sun")),
        Param("H", "float", 0.0, "hue of the light colour", low=0.0, high=1.0),
        Param("S", "float", 0.0, "saturation of the light colour (0 = white)", low=0.0, high=1.0),
        Param("V", "float", 1.0, "value of the light colour (multiplies the intensity)", low=0.0, high=1.0),
        Param("intensity", "float", 1000.0, "light power; for a sun, that of the equivalent point light",
              low=0.0, high=10000.0, unit="W"),
        Param("distance", "float", 5.0, "distance from the object's centre", low=1.0, high=20.0,
              unit="scene units"),
        Param("dir_x", "float", 0.0, "direction from the object to the light, x", low=-1.0, high=1.0),
        Param("dir_y", "float", -1.0, "direction from the object to the light, y (-1 = camera side)",
              low=-1.0, high=1.0),
        Param("dir_z", "float", 1.0, "direction from the object to the light, z (up)", low=0.0, high=1.0),
        Param("size", "float", 0.5, "area light side / point light diameter", low=0.0, high=5.0,
              unit="scene units"),
    )

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        v = {**self.defaults(), **values}
        kind = str(v["kind"]).upper()
        data = bpy.data.lights.new(f"threedb_light_{self.instance_name}", kind)
        obj = bpy.data.objects.new(data.name, data)
        self._light = (obj, data)
        try:
            self._configure(scene, obj, data, v)
        except BaseException:  # the worker only undoes controls whose apply succeeded
            self.undo(scene)
            raise

    def _configure(self, scene: "RenderScene", obj: Any, data: Any, v: Mapping[str, Any]) -> None:
        import bpy
        from mathutils import Vector

        kind = data.type
        data.color = colorsys.hsv_to_rgb(v["H"], v["S"], 1.0)
        distance, intensity = float(v["distance"]), float(v["intensity"]) * float(v["V"])
        if kind == "SUN":
            data.energy = intensity / (4.0 * math.pi * distance ** 2)
            data.angle = math.radians(0.526)  # the real sun's angular diameter
        else:
            data.energy = intensity
            if kind == "AREA":
                data.shape, data.size = "SQUARE", max(float(v["size"]), 1e-4)
            else:
                data.shadow_soft_size = float(v["size"]) / 2.0
        direction = Vector((v["dir_x"], v["dir_y"], v["dir_z"]))
        if direction.length < 1e-9:
            direction = Vector(_UP)
        direction.normalize()
        bpy.context.view_layer.update()
        target = scene.root.matrix_world.translation
        obj.location = target + direction * distance
        obj.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()  # lights shine along -Z
        obj.visible_camera = False
        scene.scene.collection.objects.link(obj)

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        obj, data = self._light
        bpy.data.objects.remove(obj, do_unlink=True)
        bpy.data.lights.remove(data, do_unlink=True)
        self._light = None
