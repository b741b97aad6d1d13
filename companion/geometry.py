"""Camera and object poses of a render, in documented frames (pure numpy; see docs/companion.md).

Frames:

* **world** (Blender's): right-handed, +Z up, metres (1 Blender unit = 1 m).
* **world, Y-up** (USD / ARKit / SceneKit): right-handed, +Y up; ``p_yup = Z_UP_TO_Y_UP @ p_world``,
  i.e. ``(x, y, z) -> (x, z, -y)``; Blender's -Y (the default "front") becomes +Z.
* **camera, OpenCV**: +X right, +Y down, +Z forward (along the optical axis); matches ``K``.
* **camera, Blender/OpenGL/ARKit**: +X right, +Y up, looks along -Z.
* **object**: the normalised mesh's frame (origin at its bounding-box centre, axes as imported into
  Blender Z-up, largest extent ``object_size`` metres).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

#: Blender/OpenGL camera axes -> OpenCV camera axes (flip Y and Z); its own inverse.
BLENDER_TO_OPENCV_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])
#: Z-up world (Blender) -> Y-up world (USD, ARKit): a -90 degree rotation about X.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 0.0],
                         [0.0, -1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])


def field_of_view(K: np.ndarray, width: int, height: int) -> dict[str, float]:
    """Horizontal, vertical and diagonal field of view in degrees of pinhole ``K`` (centred principal point)."""
    fx, fy = float(K[0, 0]), float(K[1, 1])
    fov = {"x": 2 * math.atan(width / (2 * fx)), "y": 2 * math.atan(height / (2 * fy)),
           "diagonal": 2 * math.atan(math.hypot(width / fx, height / fy) / 2)}
    return {f"fov_{k}_deg": math.degrees(v) for k, v in fov.items()}


def uniform_scale(matrix: np.ndarray) -> float:
    """The uniform scale of an affine 4x4 (cube root of the determinant of its 3x3 part)."""
    return float(np.cbrt(np.linalg.det(matrix[:3, :3])))


def pose_record(K: Any, resolution: tuple[int, int], camera_to_world: Any, root_to_world: Any,
                normalisation_scale: float) -> dict[str, Any]:
    """The documented pose block of one render.

    ``camera_to_world`` and ``root_to_world`` are the render's meta (Blender camera axes; the
    object's root, whose local unit is the source mesh's); ``normalisation_scale`` the root's scale
    before any control ran (source units -> metres).
    """
    K = np.asarray(K, dtype=np.float64)
    width, height = int(resolution[0]), int(resolution[1])
    c2w_blender = np.asarray(camera_to_world, dtype=np.float64)
    c2w_cv = c2w_blender @ BLENDER_TO_OPENCV_CAMERA
    o2w = np.asarray(root_to_world, dtype=np.float64) @ np.diag([1 / normalisation_scale] * 3 + [1.0])
    o2c = np.linalg.inv(c2w_cv) @ o2w
    return {
        "units": "metres",
        "image_size": [width, height],
        "intrinsics": {"K": K.tolist(), "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                       **field_of_view(K, width, height),
                       "pixel_convention": "origin at the top-left corner of the top-left pixel, "
                                           "x right, y down (pixel centres at +0.5)"},
        "camera_to_world_opencv": c2w_cv.tolist(),
        "camera_to_world_blender": c2w_blender.tolist(),
        "object_to_world": o2w.tolist(),
        "object_scale": uniform_scale(o2w),
        "object_in_camera_opencv": o2c.tolist(),
        "y_up": {"object_to_world": (Z_UP_TO_Y_UP @ o2w).tolist(),
                 "camera_to_world": (Z_UP_TO_Y_UP @ c2w_blender).tolist()},
    }


def project(points_world: np.ndarray, pose: Mapping[str, Any]) -> np.ndarray:
    """Pixel coordinates (N x 2, continuous; see ``pixel_convention``) of Z-up world points (N x 3)."""
    K = np.asarray(pose["intrinsics"]["K"])
    w2c = np.linalg.inv(np.asarray(pose["camera_to_world_opencv"]))
    cam = (w2c[:3, :3] @ np.asarray(points_world, dtype=np.float64).T).T + w2c[:3, 3]
    uvw = (K @ cam.T).T
    return uvw[:, :2] / uvw[:, 2:3]
