"""Safe reading of the files a run directory holds, for serving and for the image analyses.

A run directory is data from elsewhere (a copied run, a shared disk): its ``images/`` may hold
symlinks to anything on this machine, and a small PNG may decode to gigabytes. So every file the
dashboard reads from a run goes through :func:`read_inside`: the path must resolve (symlinks
followed) to a *regular* file inside the run directory, and it is read from one open descriptor
(no second lookup by name). Images are checked against :data:`MAX_PIXELS` from their header
(:func:`image_size`) before any pixel is decoded.
"""
from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path

import numpy as np

from threedb.sim.errors import ThreeDBError

#: Largest image the dashboard decodes or serves (width x height): 16.8 M pixels, e.g. 4096 x 4096.
MAX_PIXELS = 4096 * 4096
#: Largest file it reads (a PNG or EXR pass far beyond MAX_PIXELS' uncompressed size is not an image of a run).
MAX_BYTES = 256 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXR_MAGIC = b"\x76\x2f\x31\x01"


class Refused(ThreeDBError):
    """A file of a run that is not served or read (403); ``reason`` is one of :data:`REASONS`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


OUTSIDE, NOT_REGULAR, TOO_LARGE, UNREADABLE = ("outside the run directory", "not a regular file",
                                                 "over the size limit", "not a readable image")
REASONS = (OUTSIDE, NOT_REGULAR, TOO_LARGE, UNREADABLE)


def resolve_inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved when it is a regular file inside ``root`` (itself resolved); None when it does
    not exist; :class:`Refused` when it leads outside ``root`` or to something else than a regular file."""
    try:
        real = path.resolve()
        info = os.stat(real)
    except (OSError, RuntimeError, ValueError, UnicodeError):  # missing, a link loop, a NUL or surrogate in a name
        return None
    if not real.is_relative_to(root):
        raise Refused(f"{_shown(root, path)} resolves outside the run directory", OUTSIDE)
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"{_shown(root, path)} is not a regular file", NOT_REGULAR)
    return real


def read_inside(root: Path, path: Path, limit: int = MAX_BYTES) -> bytes | None:
    """The bytes of ``path`` under the rules of :func:`resolve_inside` (None when missing), read from one
    descriptor opened without following a last symlink, and at most ``limit`` bytes long."""
    real = resolve_inside(root, path)
    if real is None:
        return None
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise Refused(f"{_shown(root, path)}: cannot open ({exc.strerror})", NOT_REGULAR) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):   # swapped since resolve_inside looked
            raise Refused(f"{_shown(root, path)} is not a regular file", NOT_REGULAR)
        if info.st_size > limit:
            raise Refused(f"{_shown(root, path)} is {info.st_size} bytes, over the dashboard's limit of {limit}",
                          TOO_LARGE)
        return handle.read(limit + 1)[:limit]


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk or an EXR's data window, without decoding pixels;
    :class:`Refused` when the bytes are not the format ``name`` ends with."""
    if name.endswith(".png"):
        if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
            raise Refused(f"{name}: not a PNG file", UNREADABLE)
        return struct.unpack(">II", data[16:24])
    if name.endswith(".exr"):
        if not data.startswith(EXR_MAGIC):
            raise Refused(f"{name}: not an OpenEXR file", UNREADABLE)
        import OpenEXR

        try:
            with OpenEXR.File(io.BytesIO(data), header_only=True) as f:
                windows = [part.header["dataWindow"] for part in f.parts]
        except Exception as exc:  # the library raises bare RuntimeErrors for damaged files
            raise Refused(f"{name}: unreadable OpenEXR header ({exc})", UNREADABLE) from None
        (x0, y0), (x1, y1) = max(windows, key=lambda w: (w[1][0] - w[0][0] + 1) * (w[1][1] - w[0][1] + 1))
        return int(x1 - x0 + 1), int(y1 - y0 + 1)
    raise Refused(f"{name}: not an image the dashboard reads", UNREADABLE)


def check_size(data: bytes, name: str, max_pixels: int | None = None) -> tuple[int, int]:
    """:func:`image_size`, refusing images of more than ``max_pixels`` (default :data:`MAX_PIXELS`) pixels."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    width, height = image_size(data, name)
    if width * height > max_pixels:
        raise Refused(f"{name}: {width} x {height} pixels, over the dashboard's limit of {max_pixels:,}",
                      TOO_LARGE)
    return width, height


def decode_png(data: bytes, name: str, flags: int) -> np.ndarray | None:
    """A PNG decoded with OpenCV ``flags`` after :func:`check_size` (None when OpenCV cannot decode it)."""
    import cv2

    check_size(data, name)
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def decode_exr(data: bytes, name: str) -> dict[str, np.ndarray]:
    """Channels of an EXR by name (as :func:`threedb.sim.render.files.read_exr`, but from checked bytes)."""
    import OpenEXR

    check_size(data, name)
    try:
        with OpenEXR.File(io.BytesIO(data)) as f:
            return {name: np.array(ch.pixels) for part in f.parts for name, ch in part.channels.items()}
    except Exception as exc:
        raise Refused(f"{name}: unreadable OpenEXR file ({exc})", UNREADABLE) from None


def _shown(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name
