"""The material, occlusion and liquid scene controls: real bpy renders (64 px, 4 spp) in the shared
worker, every job with ``verify_undo`` (the scene is restored exactly after each job)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from conftest import control, datablock_probe
from threedb.controls.base import SceneControl
from threedb.controls.registry import BUILTIN_CONTROLS, import_control
from threedb.controls.scene.material import PROCEDURAL, available_textures
from threedb.controls.scene.occlusion import OCCLUDERS, TOLERANCE
from threedb.sim.errors import ConfigError
from threedb.sim.render.process import JobFailed



def render(worker, job):
    return worker.render({**job, "verify_undo": True})


def interior(mask: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return ndimage.binary_erosion(mask, iterations=margin), ndimage.binary_erosion(~mask, iterations=margin)


def diff(a, b) -> np.ndarray:
    return np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean(axis=-1)


# ------------------------------------------------------------------ declarations (no rendering)
@pytest.mark.parametrize("name", ["material", "occlusion", "liquid"])
def test_controls_declare_documented_parameters(name):
    cls = import_control(BUILTIN_CONTROLS[name])
    assert issubclass(cls, SceneControl) and cls.name == name and cls.__doc__.strip()
    for p in cls.params:
        assert p.doc and p.check_value(p.default) == p.default
        if p.kind == "float":
            assert p.unit


def test_material_values_are_checked_when_the_config_is_read():
    spec = control({"type": "material", "material": ["zebra", "image:duck", "keep_original", "red"]})
    assert spec.domains["material"].values == ("zebra", "image:duck", "keep", "red")
    with pytest.raises(ConfigError, match="did you mean 'zebra'"):
        control({"type": "material", "material": "zebar"})
    assert {"checker_blue", "duck", "tray"} <= set(available_textures())
    assert all(path.is_file() for path in available_textures().values())
    assert control({"module": "threedb.controls.blender.mug_liquid"}).cls.name == "liquid"  # the legacy path
    with pytest.raises(ConfigError):
        control({"type": "occlusion", "occlusion_ratio": 0.9})
    assert {"box", "sphere", "duck", "teddy"} <= set(OCCLUDERS)


# ------------------------------------------------------------------ material
def test_material_changes_object_pixels_only(worker, job_for):
    mat = control({"type": "material"})
    base = render(worker, job_for("mug", "city"))
    kept = render(worker, job_for("mug", "city", [(mat, {"material": "keep"})]))
    assert np.array_equal(kept.rgb, base.rgb)
    inside, outside = interior(base.passes["mask"])
    for name in ("zebra", "red", "image:duck"):
        out = render(worker, job_for("mug", "city", [(mat, {"material": name})]))
        assert np.array_equal(out.passes["mask"], base.passes["mask"]), name
        assert np.array_equal(out.passes["instance"], base.passes["instance"]), name
        d = diff(out, base)
        assert d[outside].max() <= 2, name  # the background is untouched
        assert d[inside].mean() > 15, name


def test_every_procedural_texture_renders_and_differs_from_the_others(worker, job_for):
    mat, cam = control({"type": "material"}), control({"type": "camera"})
    view = (cam, {"zoom_factor": 1.6, "view_point_z": 0.6})
    renders = {name: render(worker, job_for("soccer_ball", "studio", [view, (mat, {"material": name})]))
               for name in (*PROCEDURAL, "white", "image:duck")}
    inside, _ = interior(renders["zebra"].passes["mask"])
    assert inside.sum() > 500
    for out in renders.values():
        assert np.array_equal(out.passes["mask"], renders["zebra"].passes["mask"])
    for (a, ra), (b, rb) in itertools.combinations(renders.items(), 2):
        assert diff(ra, rb)[inside].mean() > 12, (a, b)
    # Patterned, not flat: more spatial variation on the object than a plain colour's shading and noise.
    def variation(out) -> float:
        return float(ndimage.median_filter(out.rgb.astype(float).mean(axis=-1), 3)[inside].std())

    for name in ("zebra", "checker", "cow"):
        assert variation(renders[name]) > 1.5 * variation(renders["white"]), name


def test_image_textures_from_a_user_folder(worker, job_for, tmp_path):
    import cv2

    img = np.zeros((64, 64, 3), np.uint8)
    img[..., 2] = 220  # BGR: pure red
    cv2.imwrite(str(tmp_path / "red_paint.png"), img)
    mat = control({"type": "material"})
    out = render(worker, job_for("duck", "studio", [(mat, {"material": "image:red_paint",
                                                          "texture_dir": str(tmp_path)})]))
    inside, _ = interior(out.passes["mask"])
    rgb = out.rgb[inside].astype(float).mean(axis=0)
    assert rgb[0] > 2 * rgb[1] and rgb[0] > 2 * rgb[2]
    uv = render(worker, job_for("duck", "studio", [(mat, {"material": "image:red_paint", "image_mapping": "uv",
                                                         "texture_dir": str(tmp_path)})]))
    assert np.array_equal(uv.passes["mask"], out.passes["mask"])
    with pytest.raises(JobFailed, match="no image texture 'blue_paint'.*did you mean 'red_paint'"):
        worker.render(job_for("duck", "studio", [(mat, {"material": "image:blue_paint",
                                                        "texture_dir": str(tmp_path)})]))


# ------------------------------------------------------------------ occlusion
@pytest.mark.parametrize("uid", ["mug", "teddy"])
def test_occlusion_hides_the_requested_fraction_within_tolerance(worker, job_for, uid):
    occ = control({"type": "occlusion"})
    base = render(worker, job_for(uid, "city"))
    visible = base.passes["instance"] == 1
    for ratio, direction in itertools.product((0.2, 0.5), (0, 5)):
        out = render(worker, job_for(uid, "city", [(occ, {"occlusion_ratio": ratio, "direction": direction})]))
        instance = out.passes["instance"]
        measured = 1.0 - (instance == 1).sum() / visible.sum()
        assert abs(measured - ratio) <= TOLERANCE, (ratio, direction, measured)
        report = out.meta["controls_report"]["occlusion"]
        assert abs(report["occlusion_ratio"] - ratio) < 0.01 and report["requested"] == ratio
        assert report["tolerance"] == TOLERANCE and report["visible"]
        assert (instance == 2).sum() > 20  # the occluder shows in the instance pass as 2
        # It hides the object and adds nothing of it: object pixels are a subset of the unoccluded ones.
        assert ((instance == 1) & ~ndimage.binary_dilation(visible)).sum() == 0
        # It comes in from the requested side: right (0) or bottom-left (5) of the silhouette centre.
        hidden_rows, hidden_cols = np.nonzero(visible & (instance == 2))
        rows, cols = np.nonzero(visible)
        offset = np.array([hidden_cols.mean() - cols.mean(), rows.mean() - hidden_rows.mean()])
        expected = np.array([1.0, 0.0]) if direction == 0 else np.array([-1.0, -1.0]) / np.sqrt(2)
        assert offset @ expected > 0.6 * np.linalg.norm(offset), (direction, offset)


def test_occlusion_with_mesh_occluders_after_a_camera_move(worker, job_for):
    occ, cam = control({"type": "occlusion"}), control({"type": "camera"})
    view = (cam, {"view_point_x": 0.7, "view_point_z": 0.9, "zoom_factor": 1.3})
    base = render(worker, job_for("duck", "forest", [view]))
    for occluder, ratio in (("duck", 0.35), ("sphere", 0.7)):
        out = render(worker, job_for("duck", "forest", [view, (occ, {"occlusion_ratio": ratio, "occluder": occluder,
                                                                     "direction": 2})]))
        measured = 1.0 - (out.passes["instance"] == 1).sum() / (base.passes["instance"] == 1).sum()
        assert abs(measured - ratio) <= TOLERANCE, (occluder, measured)
        assert out.meta["controls_report"]["occlusion"]["occluder"] == occluder


# ------------------------------------------------------------------ liquid
def test_liquid_fills_the_mug_and_its_mix_sets_the_colour(worker, job_for):
    liquid, cam = control({"type": "liquid"}), control({"type": "camera"})
    above = (cam, {"view_point_y": -0.4, "view_point_z": 2.0, "zoom_factor": 1.5})
    empty = render(worker, job_for("mug", "studio", [above]))
    mixes = {"coffee": {"ratio_coffee": 1.0}, "milk": {"ratio_milk": 1.0}, "water": {}}
    filled = {k: render(worker, job_for("mug", "studio", [above, (liquid, {**v, "fill_level": 0.9})]))
              for k, v in mixes.items()}
    mask = empty.passes["mask"]
    # The opening seen from above: the mug's pixels within 60% of its radius of its centre.
    rows, cols = np.nonzero(mask)
    r = np.hypot(*np.meshgrid(np.arange(64) - cols.mean(), np.arange(64) - rows.mean(), indexing="xy"))
    opening = mask & (r < 0.6 * np.sqrt(mask.sum() / np.pi))
    assert opening.sum() > 100
    _, outside = interior(mask)
    for name, out in filled.items():
        assert not (out.passes["mask"] & ~mask).any(), name  # the liquid stays inside the mug
        assert diff(out, empty)[outside].max() <= 2, name
    coffee, milk = (filled[k].rgb[opening].astype(float).mean() for k in ("coffee", "milk"))
    assert diff(filled["coffee"], empty)[opening].mean() > 15
    assert milk > coffee + 60  # white milk, dark coffee
    assert diff(filled["water"], filled["coffee"])[opening].mean() > 15
    assert filled["coffee"].meta["controls_report"]["liquid"]["coffee"] == 1.0
    none = render(worker, job_for("mug", "studio", [above, (liquid, {"ratio_coffee": 1.0, "fill_level": 0.0})]))
    assert np.array_equal(none.rgb, empty.rgb)


def test_liquid_refuses_objects_that_are_not_open_containers(worker, job_for):
    liquid = control({"type": "liquid"})
    with pytest.raises(JobFailed, match="duck.obj is not an open container"):
        worker.render(job_for("duck", "city", [(liquid, {"ratio_milk": 0.5})]))


# ------------------------------------------------------------------ undo and data pile-up
def test_repeated_application_leaves_no_objects_or_data_behind(worker, job_for, tmp_path):
    probe = datablock_probe()
    mat, occ = control({"type": "material"}), control({"type": "occlusion"})
    liquid, orient = control({"type": "liquid"}), control({"type": "orientation"})
    render(worker, job_for("mug", "city", [(probe, {})]))  # a fresh worker makes its "Render Result" image
    first = render(worker, job_for("mug", "city", [(probe, {})]))
    before = first.meta["controls_report"]["probe"]
    for i in range(3):
        steps = [(orient, {"rotation_z": 0.4 * i}), (liquid, {"ratio_coffee": 0.3 * i, "ratio_milk": 0.2}),
                 (mat, {"material": ("leopard", "image:tray", "wood")[i]}),
                 (occ, {"occlusion_ratio": 0.3, "direction": i, "occluder": ("box", "duck", "teddy")[i]}),
                 (probe, {})]
        out = render(worker, job_for("mug", "city", steps))
        assert out.meta["controls_report"]["probe"]["objects"] > before["objects"]
    last = render(worker, job_for("mug", "city", [(probe, {})]))
    assert last.meta["controls_report"]["probe"] == before
    assert np.array_equal(last.rgb, first.rgb)
