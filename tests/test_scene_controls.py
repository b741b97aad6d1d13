"""The built-in scene controls, end to end: real bpy renders (64 px, 4 spp) in the shared worker.

Every render here runs with ``verify_undo``: the worker compares scene snapshots before and after
the job, so each test also checks that its controls restore the scene exactly.
"""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
from scipy import ndimage

from conftest import SMALL, control, datablock_probe
from threedb.controls.base import SceneControl
from threedb.controls.registry import BUILTIN_CONTROLS, import_control
from threedb.sim.assets import check_mesh
from threedb.sim.render.pointcloud import object_points
from threedb.sim.render.process import RenderProcess, fast_scratch_dir

SCENE_CONTROLS = ["orientation", "camera", "position", "pin_to_ground", "obj_loc_in_frame", "scale",
                  "light", "environment", "background", "denoiser"]


def render(worker, job):
    return worker.render({**job, "verify_undo": True})


def interior(mask: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Pixels well inside the object and well inside the background (away from anti-aliased edges)."""
    return ndimage.binary_erosion(mask, iterations=margin), ndimage.binary_erosion(~mask, iterations=margin)


def centroid(mask: np.ndarray) -> np.ndarray:
    """(column, row) of the mask's centre, in pixel indices."""
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def project(point, meta) -> np.ndarray:
    """(column, row) pixel index where world ``point`` lands (see docs/rendering.md for the axes)."""
    K, cam_to_world = np.array(meta["K"]), np.array(meta["camera_to_world"])
    x, y, z = (np.linalg.inv(cam_to_world) @ np.append(point, 1.0))[:3]
    return np.array([K[0, 2] + K[0, 0] * x / -z - 0.5, K[1, 2] - K[1, 1] * y / -z - 0.5])


def origin(meta) -> np.ndarray:
    return np.array(meta["object_to_world"])[:3, 3]


# ------------------------------------------------------------------ declarations (no rendering)
@pytest.mark.parametrize("name", SCENE_CONTROLS)
def test_scene_controls_declare_documented_parameters(name):
    cls = import_control(BUILTIN_CONTROLS[name])
    assert issubclass(cls, SceneControl) and cls.name == name
    assert cls.__doc__ and cls.__doc__.strip().split("\n\n")[0]
    for p in cls.params:
        assert p.doc
        assert p.check_value(p.default) == p.default  # defaults lie inside their domains
        if p.kind == "float" and p.name not in ("H", "S", "V", "dir_x", "dir_y", "dir_z", "view_point_x",
                                                "view_point_y", "view_point_z", "zoom_factor"):
            assert p.unit, f"{name}.{p.name} declares no unit"


def test_documented_ranges_of_the_reference():
    assert (control({"type": "scale"}).cls.param("factor").low,
            control({"type": "scale"}).cls.param("factor").high) == (0.25, 2.0)
    light = control({"type": "light"}).cls
    assert light.param("kind").choices == ("point", "area", "sun")
    assert (light.param("distance").low, light.param("distance").high) == (1.0, 20.0)
    env = control({"type": "environment"}).cls
    assert set(env.param("hdri").choices) == {"", "city", "courtyard", "forest", "interior", "night", "studio",
                                             "sunrise", "sunset"}


# ------------------------------------------------------------------ transforms
def test_position_moves_the_object_by_the_projected_offset(worker, job_for):
    pos = control({"type": "position"})
    base = render(worker, job_for("soccer_ball", "city"))
    moved = render(worker, job_for("soccer_ball", "city", [(pos, {"offset_x": 0.3, "offset_z": 0.2})]))
    assert np.allclose(origin(moved.meta), [0.3, 0.0, 0.2], atol=1e-6)
    # The default camera looks along +Y: +X is image right, +Z image up, by the projected amounts.
    shift = centroid(moved.passes["mask"]) - centroid(base.passes["mask"])
    predicted = project([0.3, 0.0, 0.2], base.meta) - project([0.0, 0.0, 0.0], base.meta)
    assert shift[0] > 5 and shift[1] < -3
    assert np.abs(shift - predicted).max() < 1.0
    away = render(worker, job_for("soccer_ball", "city", [(pos, {"offset_y": 1.0})]))
    assert away.passes["mask"].sum() < 0.8 * base.passes["mask"].sum()


def test_scale_half_shrinks_the_mask_to_a_quarter(worker, job_for):
    scale = control({"type": "scale"})
    base = render(worker, job_for("soccer_ball", "city"))
    half = render(worker, job_for("soccer_ball", "city", [(scale, {"factor": 0.5})]))
    ratio = half.passes["mask"].sum() / base.passes["mask"].sum()
    assert 0.2 < ratio < 0.3
    assert np.abs(centroid(half.passes["mask"]) - centroid(base.passes["mask"])).max() < 1.0
    assert np.allclose(np.array(half.meta["object_to_world"])[:3, :3],
                       0.5 * np.array(base.meta["object_to_world"])[:3, :3], atol=1e-6)


def test_obj_loc_in_frame_puts_the_centre_where_asked(worker, job_for):
    loc = control({"type": "obj_loc_in_frame"})
    base = render(worker, job_for("soccer_ball", "city"))
    out = render(worker, job_for("soccer_ball", "city", [(loc, {"x_shift": 0.5})]))
    # 75% of the width (pixel centres: index 47.5 of 0..63), vertically still at the centre.
    assert abs(centroid(out.passes["mask"])[0] - 47.5) < 1.5
    assert abs(centroid(out.passes["mask"])[1] - centroid(base.passes["mask"])[1]) < 1.5
    cam = np.array(out.meta["camera_to_world"])[:3, 3]
    assert np.linalg.norm(origin(out.meta) - cam) == pytest.approx(np.linalg.norm(cam), abs=1e-4)
    # Any camera pose and lens: after a camera control the centre still lands where asked.
    cam_ctl = control({"type": "camera"})
    views = [(cam_ctl, {"view_point_x": 1.0, "view_point_y": 0.4, "view_point_z": 0.9, "focal_length": 35.0,
                        "zoom_factor": 0.8, "aperture": 32.0}),
             (loc, {"x_shift": -0.6, "y_shift": 0.4})]
    out = render(worker, job_for("soccer_ball", "city", views))
    assert np.abs(centroid(out.passes["mask"]) - [0.2 * 64 - 0.5, 0.3 * 64 - 0.5]).max() < 1.5
    assert np.abs(project(origin(out.meta), out.meta) - [0.2 * 64 - 0.5, 0.3 * 64 - 0.5]).max() < 1e-3


def test_pin_to_ground_rests_the_lowest_point_at_z_ground(worker, job_for, catalog):
    pin = control({"type": "pin_to_ground"})
    out = render(worker, job_for("mug", "city", [(pin, {"z_ground": 0.3})]))
    norm = check_mesh(catalog.objects["mug"], 1.0)
    # Unrotated: the normalised mug's lowest point is half its height below its centre.
    assert origin(out.meta)[2] - norm.scale * norm.extents[2] / 2 == pytest.approx(0.3, abs=1e-3)
    # After a rotation the lowest vertex changes; seen from below, the visible surface starts at z_ground.
    steps = [(control({"type": "orientation"}), {"rotation_x": 0.8, "rotation_y": 0.5}), (pin, {"z_ground": 0.6}),
             (control({"type": "camera"}), {"view_point_z": -0.8, "aperture": 32.0})]
    out = render(worker, job_for("mug", "city", steps))
    points, _ = object_points(out.passes["depth"], out.passes["mask"], out.rgb, np.array(out.meta["K"]),
                              np.array(out.meta["camera_to_world"]))
    assert points[:, 2].min() > 0.6 - 0.01
    assert points[:, 2].min() < 0.6 + 0.05


def test_pin_to_ground_moves_the_ground_plane_with_the_object(job_for):
    steps = [(control({"type": "orientation"}), {"rotation_y": 0.6}),
             (control({"type": "pin_to_ground"}), {"z_ground": 0.5}),
             (control({"type": "camera"}), {"view_point_z": 0.6, "aperture": 32.0})]
    # Its own worker: the shared one has no ground plane.
    with RenderProcess(SMALL.model_copy(update={"ground": True}), fast_scratch_dir()) as ground_worker:
        out = render(ground_worker, job_for("mug", "city", steps))
    depth, mask = out.passes["depth"], out.passes["mask"]
    ground = np.isfinite(depth) & ~mask  # the shadow-catcher plane
    assert ground.mean() > 0.3
    points, _ = object_points(depth, ground, out.rgb, np.array(out.meta["K"]), np.array(out.meta["camera_to_world"]))
    assert np.abs(points[:, 2] - 0.5).max() < 0.02
    points, _ = object_points(depth, mask, out.rgb, np.array(out.meta["K"]), np.array(out.meta["camera_to_world"]))
    assert points[:, 2].min() > 0.5 - 0.01


# ------------------------------------------------------------------ lighting and world
def test_a_strong_light_brightens_the_object_only(worker, job_for):
    light = control({"type": "light"})
    base = render(worker, job_for("duck", "city"))
    lit = render(worker, job_for("duck", "city", [(light, {"intensity": 10000.0, "distance": 3.0})]))
    inside, outside = interior(base.passes["mask"])
    assert np.array_equal(base.passes["mask"], lit.passes["mask"])  # the light is invisible to the camera
    gain = lit.rgb.astype(float) - base.rgb.astype(float)
    assert gain[inside].mean() > 10
    assert np.abs(gain[outside]).max() <= 1
    red = render(worker, job_for("duck", "city", [(light, {"intensity": 10000.0, "distance": 3.0, "S": 1.0})]))
    change = (red.rgb[inside].astype(float) - lit.rgb[inside]).mean(axis=0)
    assert change[1] < -10 and change[2] <= 0 and change[0] > change[1] + 10  # a red light: less green


def test_point_and_sun_lights_of_the_same_parameters_are_equally_bright(worker, job_for):
    dark = (control({"type": "environment"}), {"strength": 0.0})
    light = control({"type": "light"})
    means = {}
    for kind in ("point", "sun", "area"):
        out = render(worker, job_for("duck", "city", [dark, (light, {"kind": kind, "intensity": 300.0,
                                                                       "dir_z": 0.3})]))
        means[kind] = out.rgb[interior(out.passes["mask"])[0]].astype(float).mean()
    assert means["point"] > 20
    assert means["sun"] == pytest.approx(means["point"], rel=0.15)
    assert means["area"] > means["point"] * 1.3  # an area light sends all its power forward


def test_light_twenty_times_leaves_no_lights_or_data_behind(worker, job_for):
    probe = datablock_probe()
    light = control({"type": "light"})
    first = render(worker, job_for("duck", "city", [(probe, {})]))
    before = first.meta["controls_report"]["probe"]
    for i in range(20):
        values = {"kind": ("point", "area", "sun")[i % 3], "intensity": 100.0 * (i + 1), "H": i / 20, "S": 0.5}
        out = render(worker, job_for("duck", "city", [(light, values), (probe, {})]))
        during = out.meta["controls_report"]["probe"]
        assert (during["lights"], during["objects"]) == (before["lights"] + 1, before["objects"] + 1)
    last = render(worker, job_for("duck", "city", [(probe, {})]))
    assert last.meta["controls_report"]["probe"] == before
    assert np.array_equal(last.rgb, first.rgb)  # nothing of the lights is left in the scene


def test_environment_rotation_strength_and_hdri(worker, job_for):
    env = control({"type": "environment"})
    base = render(worker, job_for("mug", "city"))
    inside, outside = interior(base.passes["mask"])
    turned = render(worker, job_for("mug", "city", [(env, {"rotation": 2.0})]))
    assert np.array_equal(turned.passes["mask"], base.passes["mask"])
    assert np.abs(turned.rgb.astype(int) - base.rgb)[outside].mean() > 5
    dark = render(worker, job_for("mug", "city", [(env, {"strength": 0.0})]))
    assert dark.rgb.max() == 0
    # Swapping in a bundled HDRI renders as if the job had that environment.
    swapped = render(worker, job_for("mug", "city", [(env, {"hdri": "forest"})]))
    forest = render(worker, job_for("mug", "forest"))
    assert np.abs(swapped.rgb.astype(int) - forest.rgb).mean() < 1.0
    assert np.abs(swapped.rgb.astype(int) - base.rgb)[outside].mean() > 10
    # Naming the job's own HDRI changes nothing (and undo must not free the job's image).
    same = render(worker, job_for("mug", "city", [(env, {"hdri": "city"})]))
    assert np.array_equal(same.rgb, base.rgb)
    assert np.array_equal(render(worker, job_for("mug", "city")).rgb, base.rgb)


def test_background_colour_replaces_the_hdri_behind_the_object_only(worker, job_for):
    bg = control({"type": "background"})
    hsv = {"H": 0.6, "S": 0.8, "V": 0.7}
    base = render(worker, job_for("mug", "city"))
    out = render(worker, job_for("mug", "city", [(bg, hsv)]))
    assert np.array_equal(out.passes["mask"], base.passes["mask"])
    inside, outside = interior(base.passes["mask"])
    expected = np.round(np.array(colorsys.hsv_to_rgb(*hsv.values())) * 255)
    assert np.abs(out.rgb[outside].astype(float) - expected).max() <= 1
    assert np.abs(out.rgb[~base.passes["mask"]].astype(float) - expected).mean() < 5  # edges included
    # The object is still lit by the HDRI: its pixels barely change.
    assert np.abs(out.rgb[inside].astype(float) - base.rgb[inside]).mean() < 3


def high_frequency_energy(rgb: np.ndarray, region: np.ndarray) -> float:
    grey = rgb.astype(float).mean(axis=-1)
    return float(np.square(ndimage.laplace(grey))[region].mean())


def test_denoiser_removes_noise_and_off_is_the_identity(worker, job_for):
    den = control({"type": "denoiser"})
    noisy = render(worker, job_for("duck", "city"))
    clean = render(worker, job_for("duck", "city", [(den, {"enabled": True})]))
    off = render(worker, job_for("duck", "city", [(den, {"enabled": False})]))
    inside = interior(noisy.passes["mask"])[0]
    assert high_frequency_energy(clean.rgb, inside) < 0.5 * high_frequency_energy(noisy.rgb, inside)
    assert np.array_equal(off.rgb, noisy.rgb)  # render.denoise is off in the test settings


# ------------------------------------------------------------------ exact undo
UNDO_CASES = {
    "orientation": {"rotation_x": 0.4, "rotation_y": -1.0, "rotation_z": 2.5},
    "camera": {"view_point_x": 0.7, "view_point_z": 1.2, "zoom_factor": 1.3, "focal_length": 80.0, "aperture": 2.0},
    "position": {"offset_x": -0.4, "offset_y": 0.3, "offset_z": 0.9},
    "pin_to_ground": {"z_ground": 0.8},
    "obj_loc_in_frame": {"x_shift": -0.9, "y_shift": 0.7},
    "scale": {"factor": 0.37},
    "light": {"kind": "area", "H": 0.1, "S": 0.9, "V": 0.5, "intensity": 4000.0, "distance": 7.0,
              "dir_x": 1.0, "dir_y": 0.2, "dir_z": 0.0, "size": 2.0},
    "environment": {"rotation": -2.0, "strength": 3.0, "hdri": "sunset"},
    "background": {"H": 0.9, "S": 0.3, "V": 0.2},
    "denoiser": {"enabled": True},
}


@pytest.mark.parametrize("name", list(UNDO_CASES))
def test_every_scene_control_undoes_exactly(worker, job_for, name):
    spec = control({"type": name})
    out = worker.render({**job_for("mug", "city", [(spec, UNDO_CASES[name])]), "verify_undo": True})
    assert out.passes["mask"].any() or name in ("obj_loc_in_frame", "position")


def test_all_scene_controls_stacked_undo_exactly(worker, job_for):
    steps = [(control({"type": name, "name": f"{name}_{i}"}), UNDO_CASES[name])
             for i, name in enumerate(SCENE_CONTROLS)]
    # Two instances of light and background stack too (distinct nodes and lights per instance).
    steps += [(control({"type": "light", "name": "light_b"}), {"kind": "sun", "intensity": 500.0}),
              (control({"type": "background", "name": "background_b"}), {"H": 0.3, "S": 1.0, "V": 1.0})]
    out = worker.render({**job_for("mug", "city", steps), "verify_undo": True})
    assert out.rgb.shape == (64, 64, 3)
