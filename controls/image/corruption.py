"""Corruption: the 19 ImageNet-C corruptions at severities 1-5 (the original 3DB's ``imagenet_c``)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from threedb.controls.base import ImageControl
from threedb.controls.image.imagenet_c import CORRUPTION_NAMES, corrupt
from threedb.controls.params import Param


class CorruptionControl(ImageControl):
    """Applies one ImageNet-C corruption (Hendrycks & Dietterich 2019) to the rendered image at
    ``severity`` 1 (mild) .. 5 (strong), at any resolution: gaussian_noise, shot_noise, impulse_noise,
    defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost, fog, speckle_noise, gaussian_blur,
    spatter, saturate, brightness, contrast, elastic_transform, pixelate, jpeg_compression. ``none``
    leaves the image unchanged (useful as a baseline choice in a search). Random corruptions draw from
    the job's seed, so a job renders the same image every time. Blur radii and similar constants are
    ImageNet-C's, in pixels (chosen for 224 px images)."""

    name = "corruption"
    params = (
        Param("corruption_name", "choice", "none", "ImageNet-C corruption, or none",
              choices=("none", *CORRUPTION_NAMES)),
        Param("severity", "int", 1, "strength of the corruption", low=1, high=5),
    )

    def apply(self, image: np.ndarray, values: Mapping[str, Any], passes: Mapping[str, np.ndarray],
              rng: np.random.Generator) -> np.ndarray:
        v = {**self.defaults(), **values}
        if v["corruption_name"] == "none":
            return image
        return corrupt(image, v["corruption_name"], int(v["severity"]), rng)
