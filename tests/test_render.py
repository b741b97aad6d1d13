"""The Blender renderer, end to end: real bpy renders in a spawned worker process."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import control
from threedb.sim.render.pointcloud import object_points


def interior(mask: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Pixels well inside the object and well inside the background (away from anti-aliased edges)."""
    inside = ndimage.binary_erosion(mask, iterations=margin)
    outside = ndimage.binary_erosion(~mask, iterations=margin)
    return inside, outside


def test_outputs_have_documented_shapes_and_types(worker, job_for):
    out = worker.render(job_for("mug", "city"))
    assert out.rgb.shape == (64, 64, 3) and out.rgb.dtype == np.uint8
    assert out.passes["depth"].dtype == np.float32 and out.passes["depth"].shape == (64, 64)
    assert out.passes["mask"].dtype == bool
    assert out.passes["uv"].shape == (64, 64, 2)
    assert np.array(out.meta["K"]).shape == (3, 3)
    assert np.array(out.meta["camera_to_world"]).shape == (4, 4)


def test_mask_covers_the_object_and_not_the_background(worker, job_for):
    out = worker.render(job_for("mug", "city"))
    mask, alpha = out.passes["mask"], out.passes["alpha"]
    assert 0.02 < mask.mean() < 0.6
    inside, outside = interior(mask)
    # The object is opaque where the mask says it is, and nothing is drawn elsewhere.
    assert alpha[inside].min() > 0.99
    assert alpha[outside].max() < 0.01
    # Object centred by normalisation and framed by the default camera: mask centroid near the centre.
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - 32) < 10 and abs(cols.mean() - 32) < 10
    assert np.array_equal(mask, out.passes["instance"] == 1)


def test_depth_is_finite_exactly_on_the_object_and_is_a_camera_distance(worker, job_for):
    out = worker.render(job_for("mug", "city"))
    depth, mask = out.passes["depth"], out.passes["mask"]
    assert np.array_equal(np.isfinite(depth), mask)
    cam = np.array(out.meta["camera_to_world"])[:3, 3]
    distance_to_centre = np.linalg.norm(cam)  # the object is centred at the origin
    # Normalised to size 1: every visible point lies within the bounding sphere (radius <= sqrt(3)/2).
    assert depth[mask].min() > distance_to_centre - 0.87
    assert depth[mask].max() < distance_to_centre + 0.87


def test_point_cloud_lies_on_the_object(worker, job_for):
    out = worker.render(job_for("mug", "city"))
    points, colours = object_points(out.passes["depth"], out.passes["mask"], out.rgb,
                                    np.array(out.meta["K"]), np.array(out.meta["camera_to_world"]))
    assert len(points) == out.passes["mask"].sum()
    # Points are in world space: within the normalised object's bounding box (largest extent 1).
    assert np.abs(points).max() < 0.5 + 0.02
    assert colours.min() >= 0 and colours.max() <= 1


def test_uv_is_defined_exactly_on_the_object(worker, job_for):
    out = worker.render(job_for("duck", "city"))
    uv, mask = out.passes["uv"], out.passes["mask"]
    assert np.array_equal(np.isfinite(uv[..., 0]), mask)
    assert uv[mask].std(axis=0).min() > 0.01  # coordinates vary over the surface


def test_changing_the_hdri_changes_background_pixels_but_not_the_mask(worker, job_for):
    city = worker.render(job_for("mug", "city"))
    forest = worker.render(job_for("mug", "forest"))
    assert np.array_equal(city.passes["mask"], forest.passes["mask"])
    _, outside = interior(city.passes["mask"])
    diff = np.abs(city.rgb.astype(int) - forest.rgb.astype(int)).mean(axis=-1)
    assert diff[outside].mean() > 10


def test_same_seed_gives_identical_images_and_another_seed_differs(worker, job_for):
    a = worker.render(job_for("teddy", "studio", seed=7, job_id="x"))
    b = worker.render(job_for("teddy", "studio", seed=7, job_id="x"))
    c = worker.render(job_for("teddy", "studio", seed=7, job_id="y"))  # job seed derives from the id
    assert np.array_equal(a.rgb, b.rgb)
    for name in ("depth", "mask", "uv"):
        assert np.array_equal(a.passes[name], b.passes[name], equal_nan=True)
    assert not np.array_equal(a.rgb, c.rgb)


def test_camera_zoom_enlarges_the_object_and_rotation_moves_it(worker, job_for):
    cam = control({"type": "camera"})
    areas = [worker.render(job_for("duck", "city", [(cam, {"zoom_factor": z, "aperture": 32.0})]))
             .passes["mask"].sum() for z in (0.6, 1.0, 1.6)]
    assert areas[0] < areas[1] < areas[2]
    orient = control({"type": "orientation"})
    plain = worker.render(job_for("duck", "city")).passes["mask"]
    turned = worker.render(job_for("duck", "city", [(orient, {"rotation_z": 1.5})])).passes["mask"]
    assert (plain != turned).mean() > 0.02
    # Undo restored the scene: the same job renders the same mask again.
    assert np.array_equal(worker.render(job_for("duck", "city")).passes["mask"], plain)


@pytest.mark.parametrize("uid", ["soccer_ball", "lego", "bunny"])
def test_every_pack_object_renders_centred(worker, job_for, uid):
    mask = worker.render(job_for(uid, "studio")).passes["mask"]
    rows, cols = np.nonzero(mask)
    assert mask.mean() > 0.02
    assert abs(rows.mean() - 32) < 12 and abs(cols.mean() - 32) < 12


def test_undo_verification_catches_an_incomplete_undo(worker, job_for, tmp_path):
    from threedb.controls.registry import resolve_control
    from threedb.sim.render.process import JobFailed

    plugin = tmp_path / "leaky.py"
    plugin.write_text(
        "from threedb.controls import Param, SceneControl\n"
        "class Leaky(SceneControl):\n"
        "    '''Moves the object and forgets to move it back.'''\n"
        "    name = 'leaky'\n"
        "    params = (Param('dx', 'float', 0.1, 'shift', low=-1, high=1),)\n"
        "    def apply(self, scene, values):\n"
        "        scene.root.location.x += values['dx']\n"
        "    def undo(self, scene):\n"
        "        pass\n")
    leaky = resolve_control({"file": str(plugin)}, key="controls[0]", file=None, base_dir=tmp_path)
    job = job_for("mug", "city", [(leaky, {"dx": 0.2})])
    with pytest.raises(JobFailed, match=r"after undoing leaky.*threedb_object\.matrix_world"):
        worker.render({**job, "verify_undo": True})
    orient = control({"type": "orientation"})
    cam = control({"type": "camera"})
    job = job_for("mug", "city", [(orient, {"rotation_z": 1.0, "rotation_x": 0.3}), (cam, {"zoom_factor": 1.4})])
    assert worker.render({**job, "verify_undo": True}).passes["mask"].any()
