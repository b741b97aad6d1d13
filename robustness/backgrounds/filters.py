"""The thesis's image filters (app. A.1), as geometry on one pixel box.

* foreground variants: the model's crop may remove less than half of the box (:func:`crop_removed_fraction`
  with the model's evaluation crop, :class:`CropSpec`);
* background-only variants: the box covers at most 90% of the image (:func:`box_image_fraction`).

(The other filters, exactly one box and a successful GrabCut, are counts over samples:
:mod:`.variants`.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import BackgroundsError
from .foreground import Box, box_area

MAX_CROP_REMOVED = 0.5      # foreground variants: the crop removes strictly less than this share of the box
MAX_BOX_FRACTION = 0.9      # background-only variants: the box covers at most this share of the image


@dataclass(frozen=True)
class CropSpec:
    """The model's evaluation crop: resize the shorter side to ``resize`` pixels (``None``: no resize),
    then take the centred ``size x size`` crop (torchvision's ``Resize(resize)`` + ``CenterCrop(size)``;
    ImageNet's usual 256 / 224). The images themselves are not cropped: the crop only decides which
    boxes survive it."""

    resize: Optional[int] = 256
    size: int = 224

    def __post_init__(self) -> None:
        for name, value in (("resize", self.resize), ("size", self.size)):
            if value is None and name == "resize":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BackgroundsError(f"CropSpec.{name} must be a positive integer, got {value!r}")

    def window(self, height: int, width: int) -> tuple[float, float, float, float]:
        """The crop as a continuous box ``(x0, y0, x1, y1)`` in the original image's pixels."""
        scale = 1.0 if self.resize is None else self.resize / min(height, width)
        crop_w = min(float(width), self.size / scale)
        crop_h = min(float(height), self.size / scale)
        x0 = (width - crop_w) / 2.0
        y0 = (height - crop_h) / 2.0
        return x0, y0, x0 + crop_w, y0 + crop_h


def crop_removed_fraction(box: Box, height: int, width: int, crop: CropSpec) -> float:
    """Share of the box's area that ``crop`` cuts away (1 for an empty box)."""
    area = box_area(box)
    if area == 0:
        return 1.0
    cx0, cy0, cx1, cy1 = crop.window(height, width)
    x0, y0, x1, y1 = box
    inside = max(0.0, min(x1, cx1) - max(x0, cx0)) * max(0.0, min(y1, cy1) - max(y0, cy0))
    return 1.0 - inside / area


def box_image_fraction(box: Box, height: int, width: int) -> float:
    """Share of the image the box covers."""
    return box_area(box) / float(height * width)
