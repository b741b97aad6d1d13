"""Checking meshes with trimesh and computing their normalisation, before any rendering starts."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from threedb.sim.assets.catalog import ObjectAsset, check_blend_header
from threedb.sim.errors import AssetError


@dataclass(frozen=True)
class MeshNormalization:
    """How the renderer centres and scales a mesh (in Blender's Z-up world axes).

    The renderer maps a point ``p`` of the imported mesh to ``scale * (axis_scale * p - center)``.
    """

    center: tuple[float, float, float]
    scale: float
    extents: tuple[float, float, float]
    n_vertices: int
    n_faces: int


def check_mesh(asset: ObjectAsset, target_size: float = 1.0) -> MeshNormalization | None:
    """Validate ``asset``'s mesh and return its normalisation (``None`` for .blend files, which trimesh
    cannot read: the renderer normalises those from Blender's bounding boxes).

    Raises :class:`AssetError` naming the file if it is missing, unreadable, empty, degenerate
    or not finite.
    """
    path = Path(asset.path)
    if not path.is_file():
        raise AssetError(path, "mesh file does not exist")
    stat = path.stat()
    return _check(str(path), stat.st_mtime_ns, stat.st_size, asset.format, asset.up_axis,
                  tuple(asset.axis_scale), float(target_size))


@functools.lru_cache(maxsize=256)
def _check(path: str, _mtime: int, _size: int, fmt: str, up_axis: str, axis_scale: tuple[float, ...],
           target_size: float) -> MeshNormalization | None:
    if fmt == "blend":
        check_blend_header(path)
        return None
    import trimesh  # imported here: only needed when meshes are checked

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mesh = trimesh.load(path, force="mesh", file_type=fmt, process=False)  # raw data: check it as is
    except Exception as exc:
        raise AssetError(path, f"cannot be read as a {fmt} mesh: {type(exc).__name__}: {exc}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise AssetError(path, "the mesh is empty (no faces)")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if not np.isfinite(vertices).all():
        raise AssetError(path, "the mesh has non-finite (nan or inf) vertex coordinates")
    if not (mesh.area_faces > 1e-12 * max(float(np.ptp(vertices, axis=0).max()), 1e-12) ** 2).any():
        raise AssetError(path, f"all {len(mesh.faces)} faces are degenerate (zero area)")
    if up_axis == "Y" or fmt in ("glb", "gltf"):
        vertices = np.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], axis=1)  # Y-up -> Z-up
    vertices = vertices * np.asarray(axis_scale, dtype=np.float64)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    extents = hi - lo
    if extents.max() <= 0:
        raise AssetError(path, "the mesh has zero size")
    return MeshNormalization(center=tuple(float(v) for v in (lo + hi) / 2), scale=target_size / float(extents.max()),
                             extents=tuple(float(v) for v in extents), n_vertices=len(mesh.vertices),
                             n_faces=len(mesh.faces))
