"""Scale: a uniform scale of the object about its centre."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


class ScaleControl(SceneControl):
    """Scales the object uniformly by ``factor`` about its centre (multiplies the root's scale).

    The camera keeps its pose, so 0.5 halves the object's size in the image (a quarter of the
    area); a ``camera`` control listed after this one re-frames to the object's *normalised* size
    (``object_radius`` is not rescaled), so the scale still shows.
    """

    name = "scale"
    params = (Param("factor", "float", 1.0, "uniform scale factor (1 = unchanged)", low=0.25, high=2.0,
                    unit="x"),)

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        root = scene.root
        self._saved = tuple(root.scale)
        factor = float(values.get("factor", 1.0))
        root.scale = tuple(s * factor for s in self._saved)
        bpy.context.view_layer.update()

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        scene.root.scale = self._saved  # the exact original floats, not s * f / f
        bpy.context.view_layer.update()
