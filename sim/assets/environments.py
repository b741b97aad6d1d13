"""Checking environment files (HDRI images, .blend scenes) before any rendering starts."""
from __future__ import annotations

from pathlib import Path

from threedb.sim.assets.catalog import EnvironmentAsset, check_blend_header
from threedb.sim.errors import AssetError


def check_environment(env: EnvironmentAsset) -> None:
    """Raise :class:`AssetError` naming the file unless ``env`` is a readable HDRI or .blend file."""
    path = Path(env.path)
    if not path.is_file():
        raise AssetError(path, "environment file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".blend":
        check_blend_header(path)
    elif suffix == ".exr":
        import OpenEXR

        try:
            with OpenEXR.File(str(path), header_only=True) as f:
                window = f.header()["dataWindow"]
        except Exception as exc:
            raise AssetError(path, f"unreadable OpenEXR image: {exc}") from None
        if (window[1] < window[0]).any():
            raise AssetError(path, "the OpenEXR image is empty")
    elif suffix == ".hdr":
        with open(path, "rb") as f:
            magic = f.read(10)
        if not (magic.startswith(b"#?RADIANCE") or magic.startswith(b"#?RGBE")):
            raise AssetError(path, "not a Radiance HDR image (no #?RADIANCE header)")
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            raise AssetError(path, "unreadable Radiance HDR image")
    else:
        raise AssetError(path, f"unsupported environment format {suffix!r} (use .hdr, .exr or .blend)")
