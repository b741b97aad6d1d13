"""Object location in frame: places the object's centre at a chosen point of the image."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


class ObjLocInFrameControl(SceneControl):
    """Moves the object so that its centre projects to (x_shift, y_shift) in the camera frame, keeping
    its distance to the camera.

    Coordinates are normalised to the rendered frame: x -1 is the left edge, +1 the right edge, y -1
    the bottom edge, +1 the top edge, (0, 0) the image centre. The object moves on the sphere around
    the camera (orthographic cameras: in the plane at its current depth), so its apparent size barely
    changes. Works for any camera pose, lens, sensor fit, aspect ratio and lens shift: list it after
    the ``camera`` control, whose pose it then uses.
    """

    name = "obj_loc_in_frame"
    params = (
        Param("x_shift", "float", 0.0, "horizontal frame position of the centre (-1 left, +1 right)",
              low=-1.0, high=1.0, unit="half-widths"),
        Param("y_shift", "float", 0.0, "vertical frame position of the centre (-1 bottom, +1 top)",
              low=-1.0, high=1.0, unit="half-heights"),
    )

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy
        from mathutils import Vector

        root, cam = scene.root, scene.camera
        self._saved = tuple(root.location)
        bpy.context.view_layer.update()  # the camera pose set by earlier controls reaches matrix_world
        x = (float(values.get("x_shift", 0.0)) + 1.0) / 2.0  # 0..1 across the frame
        y = (float(values.get("y_shift", 0.0)) + 1.0) / 2.0
        # The frame's corners in camera space (Blender order: top right, bottom right, bottom left,
        # top left), sensor fit, render aspect and shift included.
        frame = cam.data.view_frame(scene=scene.scene)
        xs, ys = [c.x for c in frame], [c.y for c in frame]
        px = min(xs) + x * (max(xs) - min(xs))
        py = min(ys) + y * (max(ys) - min(ys))
        cam_to_world = cam.matrix_world.normalized()
        world_to_cam = cam_to_world.inverted()
        centre = root.matrix_world.translation.copy()
        local = world_to_cam @ centre
        if cam.data.type == "ORTHO":
            target_local = Vector((px, py, local.z))
        else:
            distance = local.length
            target_local = Vector((px, py, frame[0].z)).normalized() * distance
        root.location = Vector(self._saved) + (cam_to_world @ target_local - centre)
        bpy.context.view_layer.update()

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        scene.root.location = self._saved
        bpy.context.view_layer.update()
