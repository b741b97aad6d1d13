"""Orientation: the object's Euler rotation."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


class OrientationControl(SceneControl):
    """Rotates the object about its centre (XYZ Euler angles, applied to the object root)."""

    name = "orientation"
    params = tuple(
        Param(f"rotation_{axis}", "float", 0.0, f"rotation about the {axis.upper()} axis",
              low=-2 * math.pi, high=2 * math.pi, unit="rad")   # the original 3DB accepted angles past pi
        for axis in "xyz")

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        self._saved = tuple(scene.root.rotation_euler)
        scene.root.rotation_euler = tuple(values.get(f"rotation_{a}", 0.0) for a in "xyz")

    def undo(self, scene: "RenderScene") -> None:
        scene.root.rotation_euler = self._saved
