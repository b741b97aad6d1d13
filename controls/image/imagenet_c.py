"""The 19 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) at severities 1-5, for RGB images
of any size: the one place that adapts the ``imagecorruptions`` package.

``imagecorruptions==1.1.2`` (https://github.com/bethgelab/imagecorruptions, Apache License 2.0,
Copyright Evgenia Rusak, Claudio Michaelis and others; itself derived from Dan Hendrycks' ImageNet-C
code, Apache 2.0) is installed by ``scripts/setup.sh`` without its declared dependencies. What we
change, and why:

* **Import**: the package does ``from pkg_resources import resource_filename`` (gone from
  setuptools >= 81) only to find its frost pictures. We import it with a stand-in ``pkg_resources``
  that exists only during that import (we never call the package's ``frost``).
* **gaussian_blur, glass_blur**: call ``skimage.filters.gaussian(..., multichannel=True)``, a keyword
  scikit-image removed (0.21); ours pass ``channel_axis=-1``. Our ``glass_blur`` also replaces the
  per-pixel Python loop (1.6 s at 224 px, severity 3) by a row-vectorised one (~35 ms) with the same
  semantics (see :func:`_local_shuffle`).
* **frost**: needs ``pkg_resources``, and crops the frost picture at its native scale, so on a 64 px
  render one frost crystal covers 3.5 times more of the image than on ImageNet-C's 224 px images.
  Ours scales the frost picture by ``min(height, width) / 224`` (native scale at 224 px, as
  ImageNet-C) and enlarges it further only when it would not cover the image.
* **impulse_noise**: ``skimage.util.random_noise`` draws from a fresh unseeded generator, not numpy's
  global state; ours passes the caller's generator, so results are reproducible.
* **pixelate**: crashes when ``side * factor < 1`` (images a few pixels across); ours keeps >= 1 px.
* **zoom_blur**: 11-16 ``scipy.ndimage.zoom`` calls took ~165 ms at 224 px; ours does the same
  corner-aligned linear interpolation with numpy (~15 ms, within 1 grey level of the package).
* The package's ``corrupt`` refuses images under 32 px; we call its functions directly (they work
  from 1 px up) and round to ``uint8`` instead of truncating.

The other 13 corruptions run the package's code unchanged, with numpy's global random state seeded
from the caller's ``numpy.random.Generator`` and restored afterwards. Severity constants are the
package's (ImageNet-C's, chosen for 224 px images; blur radii etc. are in pixels at every size).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from threedb.controls.params import closest_name

#: The 19 corruption names, in the original 3DB's order.
CORRUPTION_NAMES: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "speckle_noise", "gaussian_blur", "spatter", "saturate",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: ImageNet-C's image side: frost pictures are used at their native scale on images this size.
REFERENCE_SIDE = 224

_global_rng_lock = threading.Lock()

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


# --------------------------------------------------------------------------- the public entry point

def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (``uint8`` HxWx3, any size) with corruption ``name`` at ``severity`` 1..5 applied.

    Deterministic given the state of ``rng`` (which it advances). Returns a new ``uint8`` HxWx3 array.
    """
    if name not in CORRUPTION_NAMES:
        raise ValueError(f"unknown corruption {name!r}{closest_name(name, CORRUPTION_NAMES)};"
                         f" expected one of {', '.join(CORRUPTION_NAMES)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    own = _OWN.get(name)
    out = own(image, int(severity), rng) if own is not None else _run_library(name, image, int(severity), rng)
    return _to_uint8(out, image.shape)


def _to_uint8(out: Any, shape: tuple[int, ...]) -> np.ndarray:
    result = np.asarray(out, dtype=np.float64)
    if result.shape != shape:  # every implementation here keeps the shape; guard against regressions
        raise RuntimeError(f"corruption returned shape {result.shape} for an image of shape {shape}")
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the package, unchanged

@functools.cache
def _library() -> types.ModuleType:
    """The ``imagecorruptions`` package, imported despite its stale imports (see module docstring)."""
    if importlib.util.find_spec("imagecorruptions") is None:
        raise ImportError("the corruption control needs the imagecorruptions package: run scripts/setup.sh"
                          " (it installs imagecorruptions==1.1.2 with --no-deps)")
    stub = types.ModuleType("pkg_resources")
    stub.resource_filename = _resource_filename  # type: ignore[attr-defined]
    with _modules_during_import({"pkg_resources": stub}), warnings.catch_warnings():
        # "import map_coordinates from scipy.ndimage, not scipy.ndimage.interpolation"
        warnings.simplefilter("ignore", DeprecationWarning)
        import imagecorruptions
    return imagecorruptions


def _resource_filename(package: str, relative: str) -> str:
    module = sys.modules[package]
    return str(Path(module.__file__ or ".").parent / relative)


@contextlib.contextmanager
def _modules_during_import(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    """Provide ``modules`` in ``sys.modules`` where no real module of that name is already imported."""
    added = [name for name in modules if name not in sys.modules]
    for name in added:
        sys.modules[name] = modules[name]
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _run_library(name: str, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    function = _library().corruption_dict[name]
    with _seeded_global_rng(rng):
        return np.asarray(function(Image.fromarray(image), severity))


@contextlib.contextmanager
def _seeded_global_rng(rng: np.random.Generator) -> Iterator[None]:
    """Seed numpy's global random state from ``rng`` for the duration, then restore it."""
    seed = int(rng.integers(0, 2**32))
    with _global_rng_lock:
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(saved)


# --------------------------------------------------------------------------- our replacements

def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1)


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C gaussian_blur (validation set): Gaussian blur of sigma 1, 2, 3, 4, 6 px."""
    sigma = [1, 2, 3, 4, 6][severity - 1]
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C glass_blur: blur, locally shuffle pixels (``iterations`` passes, offsets up to
    ``max_delta`` px), blur again."""
    sigma, max_delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    blurred = np.uint8(_gaussian(x / 255.0, sigma) * 255)  # truncation as in ImageNet-C
    for _ in range(iterations):
        offsets = rng.integers(-max_delta, max_delta, size=(*blurred.shape[:2], 2))  # upper bound exclusive, as upstream
        blurred = _local_shuffle(blurred, offsets, max_delta)
    return np.clip(_gaussian(blurred / 255.0, sigma), 0, 1) * 255


def _local_shuffle(x: np.ndarray, offsets: np.ndarray, delta: int) -> np.ndarray:
    """One pass of ImageNet-C's pixel shuffle, vectorised along rows.

    Upstream visits pixels (h, w) for h = H-delta .. delta+1 and, in each row, w = W-delta .. delta+1
    (both descending) and runs ``x[h, w], x[h2, w2] = x[h2, w2], x[h, w]`` with
    ``(h2, w2) = (h, w) + offsets[h, w]`` (dy, dx). On numpy arrays the right-hand side holds *views*,
    so this copies ``x[h2, w2]`` into ``x[h, w]`` and leaves ``x[h2, w2]`` as it was: ImageNet-C's
    images were made with this copy, and we reproduce it exactly. Within a row, the only sources
    that change while the row is processed are pixels of the same row to the right (already
    visited): those chains are resolved by pointer jumping.
    """
    x = x.copy()
    height, width = x.shape[:2]
    cols = np.arange(width - delta, delta, -1)
    if cols.size == 0:
        return x
    last_col = width - delta
    for h in range(height - delta, delta, -1):
        dy, dx = offsets[h, cols, 0], offsets[h, cols, 1]
        src_rows, src_cols = h + dy, cols + dx
        row = x[h].copy()
        row[cols] = x[src_rows, src_cols]  # final for sources in other rows or not (yet) visited
        chained = (dy == 0) & (src_cols > cols) & (src_cols <= last_col)
        if chained.any():
            pointer = np.arange(width)
            pointer[cols[chained]] = src_cols[chained]
            while True:
                jumped = pointer[pointer]
                if np.array_equal(jumped, pointer):
                    break
                pointer = jumped
            row[cols[chained]] = row[pointer[cols[chained]]]
        x[h] = row
    return x


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C zoom_blur: the mean of the image and of centre zooms by factors 1 .. 1.11 - 1.3."""
    factors = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
               np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)][severity - 1]
    x = (x / 255.0).astype(np.float32)
    total = x.copy()
    for factor in factors:
        total += _clipped_zoom(x, float(factor))
    return np.clip(total / (len(factors) + 1), 0, 1) * 255


def _clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Upstream's ``clipped_zoom``: the centre ``ceil(side / factor)`` crop enlarged by ``factor`` with
    ``scipy.ndimage.zoom(order=1)``'s geometry (corners aligned), then the top-left HxW of it."""
    height, width = image.shape[:2]
    for axis, side in ((0, height), (1, width)):
        crop = math.ceil(side / factor)
        start = (side - crop) // 2
        image = _linear_zoom_axis(np.take(image, np.arange(start, start + crop), axis=axis), factor, side, axis)
    return image


def _linear_zoom_axis(a: np.ndarray, factor: float, keep: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` onto ``round(n * factor)`` corner-aligned samples,
    keeping the first ``keep`` of them."""
    n_in = a.shape[axis]
    n_out = int(round(n_in * factor))
    step = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    pos = np.arange(min(keep, n_out)) * step
    lower = np.clip(np.floor(pos).astype(np.intp), 0, max(n_in - 2, 0))
    upper = np.minimum(lower + 1, n_in - 1)
    t = np.clip(pos - lower, 0.0, 1.0).astype(a.dtype)
    shape = [1] * a.ndim
    shape[axis] = t.size
    t = t.reshape(shape)
    return np.take(a, lower, axis=axis) * (1 - t) + np.take(a, upper, axis=axis) * t


@functools.cache
def _frost_picture(index: int) -> np.ndarray:
    import cv2

    folder = Path(importlib.util.find_spec("imagecorruptions").submodule_search_locations[0]) / "frost"
    files = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"]
    picture = cv2.imread(str(folder / files[index]))
    if picture is None:
        raise FileNotFoundError(folder / files[index])
    picture = np.ascontiguousarray(picture[..., ::-1])  # BGR -> RGB
    picture.setflags(write=False)
    return picture


def frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C frost: a random crop of a frost picture blended over the image, the picture scaled
    with the image (native scale at 224 px)."""
    import cv2

    image_weight, frost_weight = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    picture = _frost_picture(int(rng.integers(5)))  # upstream draws from the first 5 of the 6 pictures
    height, width = x.shape[:2]
    scale = frost_scale((height, width), picture.shape[:2])
    if scale != 1:
        size = (max(width, math.ceil(picture.shape[1] * scale)), max(height, math.ceil(picture.shape[0] * scale)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top = int(rng.integers(0, picture.shape[0] - height + 1))
    left = int(rng.integers(0, picture.shape[1] - width + 1))
    crop = picture[top:top + height, left:left + width].astype(np.float64)
    return np.clip(image_weight * x.astype(np.float64) + frost_weight * crop, 0, 255)


def frost_scale(image_shape: tuple[int, int], picture_shape: tuple[int, int]) -> float:
    """How much to resize a frost picture for an image: ``min(height, width) / 224`` (so 224 px images
    see it at native scale, as in ImageNet-C), or more where that would not cover the image."""
    (height, width), (pic_height, pic_width) = image_shape, picture_shape
    return max(min(height, width) / REFERENCE_SIDE, height / pic_height, width / pic_width)


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C impulse_noise: salt-and-pepper noise on 3%, 6%, 9%, 17%, 27% of the values."""
    from skimage.util import random_noise

    amount = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    return np.clip(random_noise(x / 255.0, mode="s&p", amount=amount, rng=rng), 0, 1) * 255


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C pixelate: box-downsample by 0.6 .. 0.25, then nearest-neighbour upsample."""
    from PIL import Image

    factor = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    height, width = x.shape[:2]
    small = Image.fromarray(x).resize((max(1, int(width * factor)), max(1, int(height * factor))), Image.BOX)
    return np.asarray(small.resize((width, height), Image.NEAREST))


#: Corruptions we implement here; the others come from the package unchanged.
_OWN: dict[str, Corruption] = {
    "gaussian_blur": gaussian_blur,
    "glass_blur": glass_blur,
    "frost": frost,
    "impulse_noise": impulse_noise,
    "pixelate": pixelate,
    "zoom_blur": zoom_blur,
}
