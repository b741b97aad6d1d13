"""Helpers shared by the built-in scene controls: the object's meshes, the camera projection, and
rasterised silhouettes computed from geometry without rendering.

``bpy`` is imported inside the functions that need it, so the master (which never imports ``bpy``)
can import the control modules to read their parameter declarations.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene

#: Custom property set on objects that controls insert into the scene (liquid, occluders), so
#: that other controls (e.g. ``material``) can tell them apart from the loaded object's meshes.
INSERTED_PROP = "threedb_inserted"


def object_meshes(scene: "RenderScene", include_inserted: bool = False) -> list[Any]:
    """The mesh objects of the loaded object (children of ``scene.root``), in a stable order.

    Meshes inserted by controls under the root (marked with :data:`INSERTED_PROP`, e.g. a liquid)
    are left out unless ``include_inserted``.
    """
    if scene.root is None:
        return []
    meshes = [o for o in scene.root.children_recursive if o.type == "MESH"]
    if not include_inserted:
        meshes = [o for o in meshes if not o.get(INSERTED_PROP)]
    return sorted(meshes, key=lambda o: o.name)


def matrix_np(m: Any) -> np.ndarray:
    """A ``mathutils.Matrix`` as a float64 numpy array."""
    return np.array([list(row) for row in m], dtype=np.float64)


def mesh_triangles(obj: Any, matrix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) of mesh object ``obj`` transformed by ``matrix`` (default: its world matrix)
    and its triangles (M, 3) as vertex indices."""
    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    mesh.calc_loop_triangles()
    tris = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("vertices", tris)
    m = matrix_np(obj.matrix_world) if matrix is None else matrix
    return co @ m[:3, :3].T + m[:3, 3], tris.reshape(-1, 3)


def merged_triangles(objs: Iterable[Any], to_space: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All triangles of ``objs`` in world space (or ``to_space @ world``), merged into one array pair."""
    verts, tris, offset = [], [], 0
    for obj in objs:
        m = matrix_np(obj.matrix_world)
        if to_space is not None:
            m = to_space @ m
        v, t = mesh_triangles(obj, m)
        verts.append(v)
        tris.append(t + offset)
        offset += len(v)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(tris)


class CameraProjection:
    """The render camera as a pinhole model: world points -> pixel coordinates of the render
    (origin at the top-left pixel corner, x right, y down) and depth along the view axis."""

    def __init__(self, scene: "RenderScene") -> None:
        from threedb.sim.render.outputs import intrinsics

        cam = scene.camera
        w, h = scene.settings.resolution
        self.size = (int(w), int(h))
        data = cam.data
        self.K = intrinsics(w, h, data.lens, data.sensor_width, data.sensor_height, data.sensor_fit,
                            data.shift_x, data.shift_y)
        cam_to_world = matrix_np(cam.matrix_world)
        # Blender camera axes (x right, y up, looks along -z) -> OpenCV axes (x right, y down, z forward).
        flip = np.diag([1.0, -1.0, -1.0, 1.0])
        self.world_to_cv = flip @ np.linalg.inv(cam_to_world)
        self.cam_to_world = cam_to_world

    @property
    def position(self) -> np.ndarray:
        return self.cam_to_world[:3, 3].copy()

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World directions of the image's right, down and the view (forward) axis."""
        r = self.cam_to_world[:3, :3]
        return r[:, 0].copy(), -r[:, 1].copy(), -r[:, 2].copy()

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return points @ self.world_to_cv[:3, :3].T + self.world_to_cv[:3, 3]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depths (N,) of world ``points`` (N, 3)."""
        pc = self.to_camera(points)
        z = pc[:, 2]
        safe = np.where(z > 1e-9, z, 1e-9)
        uv = np.stack([self.K[0, 0] * pc[:, 0] / safe + self.K[0, 2],
                       self.K[1, 1] * pc[:, 1] / safe + self.K[1, 2]], axis=1)
        return uv, z

    @property
    def focal_px(self) -> float:
        return float(self.K[0, 0])


def grid_scale(size: Sequence[int], samples: int = 256) -> float:
    """Samples per pixel side for a silhouette grid whose longer side has about ``samples`` samples."""
    return samples / max(int(size[0]), int(size[1]))


def rasterize(uv: np.ndarray, tris: np.ndarray, size: Sequence[int], scale: float = 1.0) -> np.ndarray:
    """Silhouette of triangles with pixel coordinates ``uv`` (N, 2) on an image of ``size`` = (w, h)
    pixels, sampled ``scale`` times per pixel side (may be < 1): a bool (round(h*scale),
    round(w*scale)) mask, a sample set when its centre lies in (the union of) the triangles."""
    import cv2

    w, h = max(1, round(int(size[0]) * scale)), max(1, round(int(size[1]) * scale))
    img = np.zeros((h, w), dtype=np.uint8)
    if len(tris) == 0:
        return img.astype(bool)
    shift = 4  # sub-sample precision of OpenCV's rasteriser (1/16 sample)
    # Sample (i, j) of the grid has its centre at pixel coordinates ((j + 0.5) / scale, (i + 0.5) / scale).
    pts = (uv * scale - 0.5) * (1 << shift)
    tri_pts = np.rint(pts[tris])
    # Skip triangles wholly outside the grid; clamp far-away coordinates (OpenCV wants int32).
    lo, hi = tri_pts.min(axis=1), tri_pts.max(axis=1)
    keep = (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] <= w << shift) & (lo[:, 1] <= h << shift)
    tri_pts = np.clip(tri_pts[keep], -(1 << 26), 1 << 26).astype(np.int32)
    # Triangles within one sample (dense meshes have many): set the sample nearest their centre.
    extent = tri_pts.max(axis=1) - tri_pts.min(axis=1)
    tiny = (extent < (1 << shift)).all(axis=1)
    centres = np.rint(tri_pts[tiny].mean(axis=1) / (1 << shift)).astype(np.int64)
    inside = (centres[:, 0] >= 0) & (centres[:, 0] < w) & (centres[:, 1] >= 0) & (centres[:, 1] < h)
    img[centres[inside, 1], centres[inside, 0]] = 1
    for tri in tri_pts[~tiny]:  # one call per triangle: fillPoly with many contours fills even-odd
        cv2.fillConvexPoly(img, tri, 1, lineType=cv2.LINE_8, shift=shift)
    return img.astype(bool)
