"""Depth-aware image corruptions: fog and defocus that grow with the rendered distance.

Both read the ``depth`` pass (Euclidean camera distance in scene units, ``inf`` where a pixel sees
only the environment) and work in linear light: the sRGB image is decoded, changed and re-encoded.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from threedb.controls.base import ImageControl
from threedb.controls.params import Param
from threedb.sim.render.outputs import linear_to_srgb_uint8

#: Finer steps than this many blur levels buy nothing visible: radii are interpolated between levels.
MAX_BLUR_LEVELS = 17


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    """Decode a ``uint8`` sRGB image (IEC 61966-2-1) to scene-linear ``float32`` in [0, 1]."""
    x = image.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def depth_pass(passes: Mapping[str, np.ndarray], image: np.ndarray, control: str) -> np.ndarray:
    """The ``depth`` pass as ``float64`` HxW with ``nan`` read as ``inf``; a clear error if unusable."""
    if "depth" not in passes:
        raise ValueError(f"{control} needs the 'depth' pass: add depth to render.passes in the config")
    depth = np.asarray(passes["depth"], dtype=np.float64)
    if depth.shape != image.shape[:2]:
        raise ValueError(f"{control}: depth pass of shape {depth.shape} does not match the image {image.shape}")
    return np.where(np.isnan(depth), np.inf, depth)


class DepthFogControl(ImageControl):
    """Fog that thickens with distance, using the rendered depth: a pixel at distance d keeps the
    fraction exp(-density * max(0, d - start)) of its light and the rest becomes fog colour
    (brightness times (red, green, blue)), blended in linear light. Pixels that see only the
    environment (infinite depth) become pure fog colour; density 0 leaves the image unchanged.
    Needs the ``depth`` pass."""

    name = "depth_fog"
    params = (
        Param("density", "float", 0.3, "fog extinction per scene unit beyond start", low=0.0, high=20.0,
              unit="1/scene unit"),
        Param("start", "float", 0.0, "distance from the camera where the fog begins", low=0.0, high=1000.0,
              unit="scene units"),
        Param("brightness", "float", 0.8, "fog brightness (scales the colour)", low=0.0, high=1.0),
        Param("red", "float", 1.0, "fog colour, red component (sRGB)", low=0.0, high=1.0),
        Param("green", "float", 1.0, "fog colour, green component (sRGB)", low=0.0, high=1.0),
        Param("blue", "float", 1.0, "fog colour, blue component (sRGB)", low=0.0, high=1.0),
    )

    def apply(self, image: np.ndarray, values: Mapping[str, Any], passes: Mapping[str, np.ndarray],
              rng: np.random.Generator) -> np.ndarray:
        v = {**self.defaults(), **values}
        depth = depth_pass(passes, image, self.name)
        if v["density"] <= 0:
            return image
        transmittance = np.exp(-v["density"] * np.maximum(depth - v["start"], 0.0))[..., None]
        colour = np.array([v["red"], v["green"], v["blue"]]) * v["brightness"]
        fog = srgb_to_linear(np.round(colour * 255).astype(np.uint8))
        return linear_to_srgb_uint8(srgb_to_linear(image) * transmittance + fog * (1.0 - transmittance))


class DepthDefocusControl(ImageControl):
    """Depth-of-field blur from the rendered depth: a pixel at distance d is blurred with a disc of
    radius min(max_radius, strength * |d - focus_distance|) pixels, in linear light; pixels on the
    focal plane stay sharp and the environment (infinite depth) gets max_radius. A cheap
    post-process (each pixel gathers from a disc of its own radius, without occlusion handling), not
    the renderer's physical depth of field (the camera control's aperture). Needs the ``depth`` pass."""

    name = "depth_defocus"
    params = (
        Param("focus_distance", "float", 3.0, "distance of the sharp focal plane from the camera",
              low=0.0, high=1000.0, unit="scene units"),
        Param("strength", "float", 4.0, "blur radius per scene unit of distance from the focal plane",
              low=0.0, high=1000.0, unit="px/scene unit"),
        Param("max_radius", "float", 8.0, "largest blur radius (also that of the environment)", low=0.0, high=64.0,
              unit="px"),
    )

    def apply(self, image: np.ndarray, values: Mapping[str, Any], passes: Mapping[str, np.ndarray],
              rng: np.random.Generator) -> np.ndarray:
        v = {**self.defaults(), **values}
        depth = depth_pass(passes, image, self.name)
        radius = blur_radius(depth, v["focus_distance"], v["strength"], v["max_radius"])
        if not radius.any():
            return image
        return linear_to_srgb_uint8(variable_disc_blur(srgb_to_linear(image), radius))


def blur_radius(depth: np.ndarray, focus: float, strength: float, max_radius: float) -> np.ndarray:
    """Per-pixel blur radius in pixels: ``strength * |depth - focus|`` capped at ``max_radius``."""
    with np.errstate(invalid="ignore"):  # inf - inf cannot happen (focus is finite); 0 * inf can
        radius = strength * np.abs(depth - focus)
    radius = np.where(np.isfinite(depth), radius, max_radius if strength > 0 else 0.0)
    return np.clip(np.nan_to_num(radius, nan=0.0), 0.0, max_radius)


def variable_disc_blur(image: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Blur each pixel of ``image`` (HxWxC float) with a disc of its own ``radius`` (HxW, pixels).

    The image is blurred at a few evenly spaced radii (at most 1 px apart up to 16 px) and each
    pixel interpolates linearly between the two levels around its radius; radius 0 is the image.
    """
    top = float(radius.max())
    levels = min(MAX_BLUR_LEVELS, math.ceil(top) + 1)
    step = top / (levels - 1)
    position = radius / step
    out = np.zeros_like(image, dtype=np.float32)
    for k in range(levels):
        weight = np.clip(1.0 - np.abs(position - k), 0.0, 1.0).astype(np.float32)
        if weight.any():
            out += weight[..., None] * (image if k == 0 else disc_blur(image, k * step))
    return out


def disc_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """``image`` convolved with an anti-aliased disc of ``radius`` pixels (edges reflected)."""
    import cv2

    return cv2.filter2D(image.astype(np.float32), -1, disc_kernel(radius), borderType=cv2.BORDER_REFLECT_101)


def disc_kernel(radius: float) -> np.ndarray:
    """A normalised disc of ``radius`` pixels, its edge pixels weighted by how far they lie inside."""
    half = math.ceil(radius)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(xx, yy), 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()
