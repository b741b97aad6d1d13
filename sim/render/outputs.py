"""What one render produces, and conversions of raw Blender passes into documented arrays.

Conventions (documented in docs/rendering.md):

* ``rgb``: ``uint8`` HxWx3, display-referred sRGB: the scene-linear Cycles result composited over
  the environment, clipped to [0, 1] and encoded with the sRGB transfer function — identical to
  Blender's "Standard" view transform (no Filmic/AgX tone mapping, exposure 0, gamma 1).
* ``alpha``: ``float32`` HxW, anti-aliased coverage of scene geometry (object, occluders, ground).
* ``depth``: ``float32`` HxW, Euclidean distance from the camera centre in scene units; ``inf``
  where a pixel sees only the environment.
* ``instance``: ``uint8`` HxW, 0 background/ground, 1 the object, 2.. other inserted objects
  (e.g. occluders); ``mask``: ``bool`` HxW, ``instance == 1``.
* ``uv``: ``float32`` HxWx2, the object's surface (u, v) coordinates; ``nan`` off the object.
* ``K``: 3x3 pinhole intrinsics in pixels (origin at the top-left pixel corner, y down);
  ``camera_to_world``: 4x4, Blender camera axes (looks along -Z, +Y up);
  ``object_to_world``: 4x4 pose of the object root.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

OBJECT_INSTANCE_ID = 1


@dataclass
class RenderOutput:
    """Arrays of one render plus its metadata (see module docstring for units and axes)."""

    rgb: np.ndarray
    passes: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"rgb": self.rgb, **self.passes}


def linear_to_srgb_uint8(linear: np.ndarray) -> np.ndarray:
    """Encode scene-linear RGB with the sRGB transfer function (IEC 61966-2-1) into uint8."""
    x = np.clip(linear, 0.0, 1.0)
    encoded = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return np.round(encoded * 255.0).astype(np.uint8)


def composite_over_environment(combined_rgba: np.ndarray, environment: np.ndarray | None) -> np.ndarray:
    """Premultiplied transparent-film RGBA over the environment pass (scene-linear RGB)."""
    rgb = combined_rgba[..., :3]
    if environment is None:
        return rgb
    return rgb + (1.0 - combined_rgba[..., 3:4]) * environment[..., :3]


def planar_to_euclidean_depth(z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Convert Cycles' planar Z (distance along the view axis) to distance from the camera centre."""
    h, w = z.shape
    u = (np.arange(w, dtype=np.float32) + 0.5 - K[0, 2]) / K[0, 0]
    v = (np.arange(h, dtype=np.float32) + 0.5 - K[1, 2]) / K[1, 1]
    scale = np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2)
    return (z * scale).astype(np.float32)


def intrinsics(width: int, height: int, lens_mm: float, sensor_width_mm: float, sensor_height_mm: float,
               sensor_fit: str, shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """Pinhole intrinsics of a Blender perspective camera (square pixels)."""
    fit = sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if width >= height else "VERTICAL"
    if fit == "HORIZONTAL":
        focal_px = lens_mm / sensor_width_mm * width
    else:
        sensor = sensor_width_mm if sensor_fit == "AUTO" else sensor_height_mm
        focal_px = lens_mm / sensor * height
    largest = max(width, height)
    return np.array([[focal_px, 0.0, width / 2.0 - shift_x * largest],
                     [0.0, focal_px, height / 2.0 + shift_y * largest],
                     [0.0, 0.0, 1.0]], dtype=np.float64)
