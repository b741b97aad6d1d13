"""The eight ImageNet-9 variants of one image (thesis Table 2.1), as pure numpy operations.

Images are ``HxWx3`` uint8, masks ``HxW`` bool, boxes half-open ``(x0, y0, x1, y1)`` pixel ints. Every
function returns a new array and leaves its inputs alone.

============  ===============================  ======================================
variant       foreground                       background
============  ===============================  ======================================
ORIGINAL      unmodified                       unmodified
ONLY-BG-B     box black                        unmodified
ONLY-BG-T     box filled by the tiled strip    unmodified
NO-FG         mask black                       unmodified
ONLY-FG       unmodified                       black (exactly outside the mask)
MIXED-*       unmodified                       the ONLY-BG-T image of another sample
============  ===============================  ======================================

ONLY-BG-T (app. A.1): the largest horizontal or vertical strip outside the box (the full-width band above
or below it, or the full-height band left or right of it; ties in that order) tiles the whole image,
anchored on the strip itself (so the tiling equals the image on the strip), and that tiling replaces the
box. No inpainting, on purpose.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from .errors import BackgroundsError
from .foreground import Box, _check_image

ORIGINAL = "ORIGINAL"
ONLY_BG_B = "ONLY-BG-B"
ONLY_BG_T = "ONLY-BG-T"
NO_FG = "NO-FG"
ONLY_FG = "ONLY-FG"
MIXED_SAME = "MIXED-SAME"
MIXED_RAND = "MIXED-RAND"
MIXED_NEXT = "MIXED-NEXT"

VARIANTS: tuple[str, ...] = (ORIGINAL, ONLY_BG_B, ONLY_BG_T, NO_FG, ONLY_FG, MIXED_SAME, MIXED_RAND, MIXED_NEXT)
MIXED_VARIANTS: tuple[str, ...] = (MIXED_SAME, MIXED_RAND, MIXED_NEXT)
# variants that need a segmented foreground (crop and GrabCut filters) / only the background (box-size filter)
FOREGROUND_VARIANTS: tuple[str, ...] = (NO_FG, ONLY_FG) + MIXED_VARIANTS
BACKGROUND_VARIANTS: tuple[str, ...] = (ONLY_BG_B, ONLY_BG_T)

Strip = tuple[Literal["rows", "cols"], int, int]


def only_bg_b(image: np.ndarray, box: Box) -> np.ndarray:
    """ONLY-BG-B: the box filled black."""
    _check_image(image)
    x0, y0, x1, y1 = _check_box(box, image)
    out = image.copy()
    out[y0:y1, x0:x1] = 0
    return out


def background_strip(height: int, width: int, box: Box) -> Strip:
    """The largest strip outside ``box``: ``("rows", start, stop)`` (a full-width band) or ``("cols", start,
    stop)`` (a full-height band); :class:`BackgroundsError` when the box leaves no strip (it spans the image)."""
    x0, y0, x1, y1 = box
    candidates: list[tuple[int, Strip]] = [(y0 * width, ("rows", 0, y0)), ((height - y1) * width, ("rows", y1, height)),
                                           (x0 * height, ("cols", 0, x0)), ((width - x1) * height, ("cols", x1, width))]
    area, strip = max(candidates, key=lambda c: c[0])      # max keeps the first of equal areas
    if area == 0:
        raise BackgroundsError(f"box {box} spans the whole {width}x{height} image: no background strip to tile")
    return strip


def tiled_background(image: np.ndarray, box: Box) -> np.ndarray:
    """The whole image tiled with the largest strip outside ``box`` (see the module docstring)."""
    _check_image(image)
    box = _check_box(box, image)
    height, width = image.shape[:2]
    axis, start, stop = background_strip(height, width, box)
    n = stop - start
    if axis == "rows":
        return image[start + (np.arange(height) - start) % n].copy()
    return image[:, start + (np.arange(width) - start) % n].copy()


def only_bg_t(image: np.ndarray, box: Box) -> np.ndarray:
    """ONLY-BG-T: the box replaced by the tiled background; outside it the image is unchanged."""
    x0, y0, x1, y1 = box = _check_box(box, image)
    out = image.copy()
    out[y0:y1, x0:x1] = tiled_background(image, box)[y0:y1, x0:x1]
    return out


def no_fg(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """NO-FG: the foreground pixels black (its shape kept, its texture gone)."""
    mask = _check_mask(mask, image)
    out = image.copy()
    out[mask] = 0
    return out


def only_fg(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ONLY-FG: everything outside the foreground black."""
    mask = _check_mask(mask, image)
    out = np.zeros_like(image)
    out[mask] = image[mask]
    return out


def fit_background(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """``background`` at ``height x width`` (area interpolation when shrinking, bilinear when enlarging);
    itself when it already has that size."""
    _check_image(background, "background")
    h, w = background.shape[:2]
    if (h, w) == (height, width):
        return background
    shrink = height * width < h * w
    return cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def mixed(image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """MIXED-*: the foreground pixels of ``image`` pasted unchanged onto ``background`` (another image's
    ONLY-BG-T), which is resized to the image's size first when it differs."""
    mask = _check_mask(mask, image)
    out = fit_background(background, *image.shape[:2]).copy()
    out[mask] = image[mask]
    return out


def _check_mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    _check_image(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise BackgroundsError(f"mask is {mask.shape}, its image {image.shape[:2]} (HxW)")
    return mask.astype(bool, copy=False)


def _check_box(box: Box, image: np.ndarray) -> Box:
    height, width = image.shape[:2]
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise BackgroundsError(f"a box must be four pixel ints (x0, y0, x1, y1), got {box!r}") from None
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise BackgroundsError(f"box {box} is not a pixel box inside the {width}x{height} image")
    return x0, y0, x1, y1
