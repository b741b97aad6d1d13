"""Camera: view-point direction, framing zoom, focal length and aperture (depth of field)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


class CameraControl(SceneControl):
    """Looks at the object from direction (view_point_x, view_point_y, view_point_z), at the distance
    where the object's bounding sphere just fills the frame divided by ``zoom_factor``; depth of field
    is enabled, focused on the object's centre, with f-stop ``aperture``."""

    name = "camera"
    params = (
        # Only the direction of (x, y, z) matters; the original 3DB's examples use up to z = 2.
        Param("view_point_x", "float", 0.0, "view direction, x component", low=-2.0, high=2.0),
        Param("view_point_y", "float", -1.0, "view direction, y component", low=-2.0, high=2.0),
        Param("view_point_z", "float", 0.35, "view direction, z component (up)", low=-2.0, high=2.0),
        Param("zoom_factor", "float", 1.0, "> 1 moves closer than the fitted distance", low=0.2, high=2.0),
        Param("focal_length", "float", 50.0, "lens focal length (36 mm sensor)", low=10.0, high=400.0, unit="mm"),
        Param("aperture", "float", 8.0, "f-stop of the depth of field (smaller is blurrier)", low=1.0, high=32.0,
              unit="f-stop"),
    )

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        cam = scene.camera
        dof = cam.data.dof
        self._saved = (tuple(cam.location), tuple(cam.rotation_euler), cam.data.lens,
                       dof.use_dof, dof.focus_distance, dof.aperture_fstop)
        v = {**self.defaults(), **values}
        cam.data.lens = v["focal_length"]
        scene.frame_object((v["view_point_x"], v["view_point_y"], v["view_point_z"]), v["zoom_factor"])
        dof.use_dof = True
        dof.focus_distance = (cam.location - scene.root.matrix_world.translation).length
        dof.aperture_fstop = v["aperture"]

    def undo(self, scene: "RenderScene") -> None:
        cam = scene.camera
        dof = cam.data.dof
        location, rotation, cam.data.lens, dof.use_dof, dof.focus_distance, dof.aperture_fstop = self._saved
        cam.location, cam.rotation_euler = location, rotation
