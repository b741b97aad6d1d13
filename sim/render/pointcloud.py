"""Coloured point clouds of the visible object, from the depth and mask passes (for 3D robustness work)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def object_points(depth: np.ndarray, mask: np.ndarray, rgb: np.ndarray, K: np.ndarray,
                  camera_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-space points (Nx3, float64) and colours (Nx3 in [0, 1]) of the masked pixels.

    ``depth`` is the Euclidean camera distance (see :mod:`threedb.sim.render.outputs`); Blender
    cameras look along their -Z axis with +Y up while image rows go down, hence the sign flips.
    """
    K = np.asarray(K, dtype=np.float64)
    rows, cols = np.nonzero(mask & np.isfinite(depth))
    x = (cols + 0.5 - K[0, 2]) / K[0, 0]
    y = (rows + 0.5 - K[1, 2]) / K[1, 1]
    rays = np.stack([x, -y, -np.ones_like(x)], axis=1)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    cam_points = rays * depth[rows, cols, None]
    c2w = np.asarray(camera_to_world, dtype=np.float64)
    world = cam_points @ c2w[:3, :3].T + c2w[:3, 3]
    colours = rgb[rows, cols].astype(np.float64) / 255.0
    return world, colours


def write_point_cloud(path: str | Path, points: np.ndarray, colours: np.ndarray) -> None:
    """Write a coloured point cloud (.ply/.pcd) with open3d."""
    import open3d as o3d  # heavy: imported only when a point cloud is asked for

    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(points)
    cloud.colors = o3d.utility.Vector3dVector(colours)
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"open3d could not write {path}")
