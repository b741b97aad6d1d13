"""Position: a world-space translation of the object."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


class PositionControl(SceneControl):
    """Moves the object by (offset_x, offset_y, offset_z) scene units in world axes (after its rotation).

    The offset is added to the object root's location, so it composes with pin_to_ground and
    obj_loc_in_frame. The camera keeps its pose: with the default camera (looking along +Y) +X moves
    the object right in the image and +Z up. A ``camera`` control listed *after* this one re-frames
    the moved object instead. Normalised objects are 1 scene unit across (``assets.object_size``).
    """

    name = "position"
    params = tuple(
        Param(f"offset_{axis}", "float", 0.0, f"translation along world {axis.upper()}",
              low=-1.0, high=1.0, unit="scene units")
        for axis in "xyz")

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        root = scene.root
        self._saved = tuple(root.location)
        root.location = tuple(c + float(values.get(f"offset_{a}", 0.0)) for c, a in zip(self._saved, "xyz"))
        bpy.context.view_layer.update()  # later controls (camera framing) read root.matrix_world

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        scene.root.location = self._saved
        bpy.context.view_layer.update()
