"""Example control plugins for threedb (see docs/custom-controls.md): copy this file to start your own.

``Tilt`` is a scene control: it changes the Blender scene before the render and restores it after.
``Vignette`` is an image control: it transforms the rendered image.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from threedb.controls import ImageControl, Param, SceneControl


class Tilt(SceneControl):
    """Tilts the object towards or away from the camera by an angle in degrees (about the X axis)."""

    name = "tilt"
    params = (
        Param("angle", "float", 0.0, "tilt about the X axis", low=-90.0, high=90.0, unit="deg"),
    )

    def apply(self, scene: Any, values: Mapping[str, Any]) -> None:
        # Record exactly what is changed, so that undo can restore it.
        self._saved = scene.root.rotation_euler.x
        scene.root.rotation_euler.x += math.radians(values["angle"])

    def undo(self, scene: Any) -> None:
        scene.root.rotation_euler.x = self._saved


class Vignette(ImageControl):
    """Darkens the image towards its corners (a lens vignette)."""

    name = "vignette"
    params = (
        Param("strength", "float", 0.0, "darkening at the corners (0 = none, 1 = black)", low=0.0, high=1.0),
    )

    def apply(self, image: np.ndarray, values: Mapping[str, Any], passes: Mapping[str, np.ndarray],
              rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        y, x = np.mgrid[0:h, 0:w]
        r = np.hypot((x + 0.5) / w - 0.5, (y + 0.5) / h - 0.5) / math.hypot(0.5, 0.5)
        gain = 1.0 - values["strength"] * r ** 2
        return np.clip(image * gain[..., None], 0, 255).astype(np.uint8)
