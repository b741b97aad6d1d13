"""Writing render outputs to disk: 8-bit PNGs and lossless float32 EXRs for the extra passes."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import OpenEXR


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (HxWx3) or single-channel uint8 image losslessly."""
    array = image[..., ::-1] if image.ndim == 3 else image  # OpenCV wants BGR
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode a {image.dtype} {list(image.shape)} image as PNG")
    with open(path, "wb") as handle:   # Python's own write: a full disk or a read-only folder keeps its errno
        handle.write(encoded.tobytes())


def write_exr(path: str | Path, array: np.ndarray, channels: str | tuple[str, ...] = "Y") -> None:
    """Write a float32 HxW or HxWxC array as an uncompressed-precision (ZIP, lossless) EXR."""
    data = np.asarray(array, dtype=np.float32)
    if data.ndim == 2:
        data = data[..., None]
    names = (channels,) if isinstance(channels, str) else channels
    if len(names) != data.shape[-1]:
        raise ValueError(f"{len(names)} channel names for {data.shape[-1]} channels")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    content = {name: np.ascontiguousarray(data[..., i]) for i, name in enumerate(names)}
    with OpenEXR.File(header, content) as f:
        f.write(str(path))


def read_exr(path: str | Path) -> dict[str, np.ndarray]:
    """Channels of an EXR file by name."""
    with OpenEXR.File(str(path)) as f:
        return {name: np.array(ch.pixels) for part in f.parts for name, ch in part.channels.items()}
