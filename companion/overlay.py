"""The edge overlay of a render: the object's outline as a transparent RGBA PNG for a live camera view.

Edges come from the render's geometry, not its colours (lighting and texture differ between the
render and the real scene): OpenCV Canny on the object mask gives the silhouette, and depth
discontinuities on the object (a mug's handle in front of its body) give inner occluding contours.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: Default edge colour (RGB): a green that stands out on most camera views.
EDGE_COLOR = (0, 255, 0)
#: A depth step between neighbouring object pixels larger than this fraction of the nearer depth
#: is an occluding contour (a smooth surface at a grazing angle stays well under it at these sizes).
DEPTH_JUMP = 0.05


def edge_mask(mask: np.ndarray, depth: np.ndarray | None = None, *, depth_jump: float = DEPTH_JUMP) -> np.ndarray:
    """Boolean HxW edges: the silhouette of ``mask`` plus depth discontinuities on the object."""
    obj = np.asarray(mask, dtype=bool)
    edges = cv2.Canny(obj.astype(np.uint8) * 255, 100, 200) > 0
    if depth is not None:
        d = np.where(obj & np.isfinite(depth), depth, np.nan).astype(np.float64)
        for axis in (0, 1):
            a = d[:-1, :] if axis == 0 else d[:, :-1]
            b = d[1:, :] if axis == 0 else d[:, 1:]
            with np.errstate(invalid="ignore"):
                jump = np.abs(a - b) > depth_jump * np.fmin(a, b)
            # mark the farther pixel: the contour lies on the occluded side's boundary
            far_a, far_b = jump & (a > b), jump & (b >= a)
            if axis == 0:
                edges[:-1, :] |= far_a
                edges[1:, :] |= far_b
            else:
                edges[:, :-1] |= far_a
                edges[:, 1:] |= far_b
    return edges


def line_width(width: int, height: int) -> int:
    """A line width in pixels readable on a phone: 1 px at 64 px, 5 px at 1080 px."""
    return max(1, round(min(width, height) / 200))


def edge_overlay(mask: np.ndarray, depth: np.ndarray | None = None, *, color: tuple[int, int, int] = EDGE_COLOR,
                 width_px: int | None = None) -> np.ndarray:
    """RGBA uint8 HxWx4: ``color`` and opaque on the edges (see :func:`edge_mask`), transparent elsewhere."""
    edges = edge_mask(mask, depth)
    h, w = edges.shape
    width_px = line_width(w, h) if width_px is None else width_px
    if width_px > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width_px, width_px))
        edges = cv2.dilate(edges.astype(np.uint8), kernel) > 0
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[edges] = (*color, 255)
    return rgba


def write_rgba_png(path: str | Path, rgba: np.ndarray) -> None:
    """Write an RGBA uint8 image as a PNG with its alpha channel."""
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgba), cv2.COLOR_RGBA2BGRA)):
        raise OSError(f"cannot write {path}")
