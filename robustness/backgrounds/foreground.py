"""Foreground masks: exact (a rendered object mask) or estimated from one box by OpenCV's GrabCut.

Boxes are ``(x0, y0, x1, y1)`` pixel ints, half-open: the box covers ``image[y0:y1, x0:x1]``.
:func:`pixel_box` turns the continuous ``x1, y1, x2, y2`` boxes of COCO / VOC / ``ImageDataset``
into such a box (outward rounding, so the pixel box covers the annotated one).

GrabCut (Rother et al. 2004, as the thesis uses it through ``cv2.grabCut``) starts from the box
(``GC_INIT_WITH_RECT``: outside the box is definite background) and runs ``iterations`` rounds
[GAP in the thesis: the count is not given; default 5, OpenCV's tutorial setting]. It *fails*, which is
reported in the result rather than raised, when OpenCV raises (e.g. no pixel outside the box to model the
background), when the foreground covers less than ``min_fraction`` of the box (nothing found) or more
than ``max_fraction`` of it (GrabCut separated nothing: the "foreground" is the box).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import cv2
import numpy as np

from .errors import BackgroundsError

Box = tuple[int, int, int, int]
Method = Literal["mask", "grabcut"]

GRABCUT_ITERATIONS = 5
# a box annotation may overhang the image by rounding: tolerated up to this many pixels, then clipped
BOX_TOLERANCE = 0.5


@dataclass(frozen=True)
class ForegroundMask:
    """The foreground of one image.

    ``mask``: ``HxW`` bool (all False when detection failed); ``box``: the object's pixel box (the given
    box for GrabCut, the mask's tight box for an exact mask; ``None`` for an empty mask); ``method``:
    ``"mask"`` or ``"grabcut"``; ``iterations``: GrabCut's rounds (``None`` for a mask); ``ok``: whether
    the foreground is usable; ``reason``: why not (``None`` when ``ok``).
    """

    mask: np.ndarray
    box: Optional[Box]
    method: Method
    iterations: Optional[int]
    ok: bool
    reason: Optional[str] = None

    @property
    def box_fraction(self) -> float:
        """Fraction of the box's pixels that are foreground (0 without a box)."""
        if self.box is None or box_area(self.box) == 0:
            return 0.0
        x0, y0, x1, y1 = self.box
        return float(self.mask[y0:y1, x0:x1].sum()) / box_area(self.box)


def box_area(box: Box) -> int:
    """Pixels in a half-open pixel box."""
    x0, y0, x1, y1 = box
    return max(0, x1 - x0) * max(0, y1 - y0)


def pixel_box(box: Sequence[float], height: int, width: int, *, where: str = "box") -> Box:
    """The half-open pixel box ``(x0, y0, x1, y1)`` covering a continuous box ``[x0, y0, x1, y1]``.

    Rounds outwards (floor the start, ceil the end) and clips to the ``height x width`` image; a box that is
    not four finite numbers with ``x0 <= x1, y0 <= y1``, or lies outside the image by more than half a
    pixel, is a :class:`BackgroundsError` naming ``where``. A zero-width box stays zero-width.
    """
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,) or not np.all(np.isfinite(values)):
        raise BackgroundsError(f"{where}: expected four finite numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in values)
    if x1 < x0 or y1 < y0:
        raise BackgroundsError(f"{where}: box {[x0, y0, x1, y1]} is inverted (need x0 <= x1, y0 <= y1)")
    if (x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE
            or y1 > height + BOX_TOLERANCE):
        raise BackgroundsError(f"{where}: box {[x0, y0, x1, y1]} lies outside the {width}x{height} image")
    ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    ix1, iy1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    return ix0, iy0, max(ix0, ix1), max(iy0, iy1)


def mask_box(mask: np.ndarray) -> Optional[Box]:
    """The tight half-open box of a bool mask's True pixels, ``None`` when it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_foreground(mask: np.ndarray) -> ForegroundMask:
    """An exact foreground (a rendered object mask): no detection; its box is the mask's tight box.

    An empty mask is reported (``ok=False``, reason ``"empty mask"``), not raised.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BackgroundsError(f"a mask must be HxW, got shape {mask.shape}")
    mask = mask.astype(bool, copy=False)
    box = mask_box(mask)
    return ForegroundMask(mask=mask, box=box, method="mask", iterations=None, ok=box is not None,
                          reason=None if box is not None else "empty mask")


def grabcut_foreground(image: np.ndarray, box: Box, *, iterations: int = GRABCUT_ITERATIONS,
                       min_fraction: float = 0.01, max_fraction: float = 0.99, seed: int = 0) -> ForegroundMask:
    """GrabCut's foreground (definite + probable foreground) of ``image`` (``HxWx3`` uint8) in ``box``.

    GrabCut's GMMs are initialised by OpenCV's k-means, which draws from OpenCV's random generator of the
    calling thread: it is reseeded with ``seed`` (``cv2.setRNGSeed``) before each call, so the same image
    and box give the same mask. Failures come back as ``ok=False`` with a reason (see the module docstring).
    """
    _check_image(image)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise BackgroundsError(f"GrabCut iterations must be a positive integer, got {iterations!r}")
    if not 0.0 <= min_fraction < max_fraction <= 1.0:
        raise BackgroundsError(f"need 0 <= min_fraction < max_fraction <= 1, got {min_fraction}, {max_fraction}")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise BackgroundsError(f"box {box} is not a pixel box inside the {width}x{height} image")
    empty = np.zeros((height, width), dtype=bool)

    def failed(reason: str) -> ForegroundMask:
        return ForegroundMask(mask=empty, box=box, method="grabcut", iterations=iterations, ok=False, reason=reason)

    if box_area(box) == 0:
        return failed("empty box")
    labels = np.zeros((height, width), dtype=np.uint8)
    bgd_model = np.zeros((1, 65), dtype=np.float64)
    fgd_model = np.zeros((1, 65), dtype=np.float64)
    cv2.setRNGSeed(int(seed))
    try:
        cv2.grabCut(np.ascontiguousarray(image), labels, (x0, y0, x1 - x0, y1 - y0), bgd_model, fgd_model,
                    iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return failed(f"cv2.grabCut raised: {message}")
    mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    result = ForegroundMask(mask=mask, box=box, method="grabcut", iterations=iterations, ok=True)
    fraction = result.box_fraction
    if fraction < min_fraction or not mask.any():
        return failed(f"empty foreground ({fraction:.1%} of the box, minimum {min_fraction:.1%})")
    if fraction > max_fraction:
        return failed(f"foreground fills the box ({fraction:.1%} of it, maximum {max_fraction:.1%})")
    return result


def _check_image(image: np.ndarray, where: str = "image") -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise BackgroundsError(f"{where} must be an HxWx3 uint8 array, got shape {shape} dtype {dtype}")
