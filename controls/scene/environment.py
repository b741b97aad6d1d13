"""Environment: rotation and strength of the HDRI world, optionally another bundled HDRI."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene

#: The HDRIs that ship with Blender (<bpy>/5.x/datafiles/studiolights/world/NAME.exr).
BUNDLED_HDRIS = ("city", "courtyard", "forest", "interior", "night", "studio", "sunrise", "sunset")


class EnvironmentControl(SceneControl):
    """Rotates the HDRI environment about the vertical axis and scales its strength (background and
    lighting together); optionally swaps in one of Blender's bundled HDRIs.

    ``rotation`` is added to ``render.environment_rotation`` and ``strength`` multiplies
    ``render.environment_strength`` (with the default settings, 0 and 1, both are absolute values),
    so the defaults leave the environment unchanged. ``hdri`` names a bundled HDRI (city, courtyard,
    forest, interior, night, studio, sunrise, sunset) to use instead of the job's environment; ""
    keeps the job's. Swapping the image makes Cycles re-sync the scene (about a second), so prefer
    listing environments in the config when the search does not need the HDRI as a parameter.
    """

    name = "environment"
    params = (
        Param("rotation", "float", 0.0, "rotation about the vertical (Z) axis, added to the configured one",
              low=-3.141592653589793, high=3.141592653589793, unit="rad"),
        Param("strength", "float", 1.0, "multiplier of the configured HDRI strength", low=0.0, high=10.0,
              unit="x"),
        Param("hdri", "choice", "", "bundled HDRI to use instead of the job's ('' keeps it)",
              choices=("", *BUNDLED_HDRIS)),
    )

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        rotation = scene.world_mapping.inputs["Rotation"]
        strength = scene.world_background.inputs["Strength"]
        texture = scene.world_texture
        self._saved = (tuple(rotation.default_value), strength.default_value, texture.image)
        self._loaded = None
        rotation.default_value[2] += float(values.get("rotation", 0.0))
        strength.default_value *= float(values.get("strength", 1.0))
        name = values.get("hdri", "")
        if name:
            from threedb.sim.assets.catalog import blender_hdri_dir
            from threedb.sim.errors import AssetError

            path = str(blender_hdri_dir() / f"{name}.exr")
            before = set(bpy.data.images)
            try:
                image = bpy.data.images.load(path, check_existing=True)
            except RuntimeError as exc:
                raise AssetError(path, f"Blender cannot load this HDRI: {exc}") from None
            if image not in before:
                self._loaded = image  # ours: removed again by undo so that images do not pile up
            texture.image = image

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        rotation, strength, image = self._saved
        scene.world_mapping.inputs["Rotation"].default_value = rotation
        scene.world_background.inputs["Strength"].default_value = strength
        scene.world_texture.image = image
        if self._loaded is not None:
            bpy.data.images.remove(self._loaded)
            self._loaded = None
