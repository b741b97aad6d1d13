"""`threedb render` end to end, and its errors for bad input (raised before any rendering)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
import yaml

from conftest import REPO
from threedb.sim.render.files import read_exr

SMALL = ["--set", "render.resolution=64", "--set", "render.samples=4"]


def threedb(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "threedb.sim.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_render_preview_writes_images_passes_and_index(tmp_path):
    out = tmp_path / "preview"
    result = threedb("render", "configs/preview.yaml", "--out", str(out), "-n", "2", *SMALL,
                     "--set", "render.point_cloud=true")
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "preview.json").read_text())
    assert len(index["renders"]) == 2
    import cv2
    for record in index["renders"]:
        files = record["files"]
        rgb = cv2.imread(str(out / files["rgb"]))
        mask = cv2.imread(str(out / files["mask"]), cv2.IMREAD_GRAYSCALE) > 0
        depth = read_exr(out / files["depth"])["Z"]
        assert rgb.shape == (64, 64, 3) and mask.any()
        assert np.array_equal(np.isfinite(depth), mask)
        assert set(read_exr(out / files["uv"])) == {"U", "V"}
        assert (out / files["point_cloud"]).stat().st_size > 0
        assert set(record["controls"]) == {"orientation", "camera"}


def write_config(tmp_path: Path, **sections) -> Path:
    config = {"assets": {"root": "default", "objects": ["mug"], "environments": ["city"]},
              "render": {"resolution": 64, "samples": 4}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def user_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "objects").mkdir(parents=True)
    (root / "environments").mkdir()
    trimesh.creation.box().export(root / "objects" / "box.obj")
    import cv2
    cv2.imwrite(str(root / "environments" / "grey.hdr"), np.full((8, 16, 3), 0.5, np.float32))
    return root


@pytest.mark.parametrize("case, expect", [
    ("corrupt mesh", "objects/broken.obj"),
    ("unknown object", "'mugg'"),
    ("unknown environment", "'cty'"),
    ("unreadable hdri", "environments/bad.hdr"),
    ("missing root", "no_such_folder"),
    ("missing control file", "missing_control.py"),
    ("empty range", "controls[0].rotation_z: range [3.0, 1.0] is empty"),
])
def test_bad_input_gives_one_clear_error_before_rendering(tmp_path, case, expect):
    out = tmp_path / "out"
    if case == "corrupt mesh":
        root = user_root(tmp_path)
        (root / "objects" / "broken.obj").write_bytes(b"v 0 0\nf 1 2 9\n\x00\xff garbage")
        config = write_config(tmp_path, assets={"root": str(root), "objects": ["broken"], "environments": "all"})
    elif case == "unknown object":
        config = write_config(tmp_path, assets={"objects": ["mugg"]})
    elif case == "unknown environment":
        config = write_config(tmp_path, assets={"environments": ["cty"]})
    elif case == "unreadable hdri":
        root = user_root(tmp_path)
        (root / "environments" / "bad.hdr").write_bytes(b"not an image")
        config = write_config(tmp_path, assets={"root": str(root), "objects": ["box"], "environments": ["bad"]})
    elif case == "missing root":
        config = write_config(tmp_path, assets={"root": "./no_such_folder"})
    elif case == "missing control file":
        config = write_config(tmp_path, controls=[{"file": "missing_control.py"}])
    else:
        config = write_config(tmp_path, controls=[{"type": "orientation", "rotation_z": [3.0, 1.0]}])
    result = threedb("render", str(config), "--out", str(out), "-n", "1")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # nothing started


def test_user_asset_root_renders(tmp_path):
    root = user_root(tmp_path)
    config = write_config(tmp_path, assets={"root": str(root), "objects": ["box"], "environments": ["grey"]})
    out = tmp_path / "out"
    result = threedb("render", str(config), "--out", str(out), "-n", "1")
    assert result.returncode == 0, result.stderr
    import cv2
    mask = cv2.imread(str(out / "preview-0000_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert 0.05 < mask.mean() < 0.8


def test_controls_command_lists_builtins():
    result = threedb("controls")
    assert result.returncode == 0
    assert "orientation" in result.stdout and "zoom_factor" in result.stdout


MAKE_BLEND = """
import bpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cone_add(radius1=3.0, depth=8.0, location=(5, 5, 5))
bpy.context.active_object.name = "cone"
bpy.ops.mesh.primitive_cube_add(location=(50, 0, 0))   # another object in the file: not ours
bpy.context.active_object.name = "distractor"
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
"""


@pytest.mark.parametrize("layout", ["3db-blend", "ours-glb"])
def test_blend_and_gltf_objects_render_normalised(tmp_path, layout):
    import cv2
    if layout == "3db-blend":
        root = tmp_path / "root"
        (root / "blender_models").mkdir(parents=True)
        (root / "blender_environments").mkdir()
        subprocess.run([sys.executable, "-c", MAKE_BLEND, str(root / "blender_models" / "cone.blend")],
                       check=True, capture_output=True)
        cv2.imwrite(str(root / "blender_environments" / "grey.hdr"), np.full((8, 16, 3), 0.5, np.float32))
        uid = "cone"
    else:
        root = user_root(tmp_path)
        mesh = trimesh.creation.cone(radius=3.0, height=8.0)
        mesh.apply_translation((5, 5, 5))
        mesh.export(root / "objects" / "cone.glb")
        uid = "cone"
    config = write_config(tmp_path, assets={"root": str(root), "objects": [uid], "environments": ["grey"]},
                          render={"resolution": 64, "samples": 4, "passes": ["mask", "depth"]})
    out = tmp_path / "out"
    result = threedb("render", str(config), "--out", str(out), "-n", "1")
    assert result.returncode == 0, result.stderr
    mask = cv2.imread(str(out / "preview-0000_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    rows, cols = np.nonzero(mask)
    # Only the named object, centred and scaled into the frame (the distractor 50 units away is not loaded).
    assert 0.05 < mask.mean() < 0.8
    assert abs(rows.mean() - 32) < 10 and abs(cols.mean() - 32) < 10
    record = json.loads((out / "preview.json").read_text())["renders"][0]
    assert np.abs(np.array(record["object_to_world"])[:3, 3]).max() < 1e-6


MAKE_BLEND_ENVIRONMENT = """
import bpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_plane_add(size=40, location=(0, 0, -0.6))      # a floor under the object
bpy.ops.object.light_add(type="SUN", location=(0, 0, 5))
bpy.context.active_object.data.energy = 3.0
bpy.ops.object.camera_add(location=(9, 9, 9))                          # cameras are not appended
world = bpy.data.worlds.new("sky")   # worlds use nodes in Blender 5.0; world.color is viewport-only
world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.2, 0.3, 0.8, 1.0)
bpy.context.scene.world = world
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
"""


def test_blend_environment_renders_its_scenery_around_the_object(tmp_path):
    import cv2
    root = user_root(tmp_path)
    subprocess.run([sys.executable, "-c", MAKE_BLEND_ENVIRONMENT, str(root / "environments" / "room.blend")],
                   check=True, capture_output=True)
    config = write_config(tmp_path, assets={"root": str(root), "objects": ["box"], "environments": ["room", "grey"]},
                          render={"resolution": 64, "samples": 4, "passes": ["mask"]})
    out = tmp_path / "out"
    result = threedb("render", str(config), "--out", str(out), "-n", "2")
    assert result.returncode == 0, result.stderr
    records = {r["environment"]: r for r in json.loads((out / "preview.json").read_text())["renders"]}
    room = cv2.imread(str(out / records["room"]["files"]["rgb"]))
    grey = cv2.imread(str(out / records["grey"]["files"]["rgb"]))
    room_mask = cv2.imread(str(out / records["room"]["files"]["mask"]), cv2.IMREAD_GRAYSCALE) > 0
    grey_mask = cv2.imread(str(out / records["grey"]["files"]["mask"]), cv2.IMREAD_GRAYSCALE) > 0
    # The floor is scenery (instance 0), so the mask is the object's alone, the same in both.
    assert np.array_equal(room_mask, grey_mask)
    # Below the object the floor is seen; above it, the .blend world's blue sky instead of the grey HDRI.
    assert np.abs(room[~room_mask].astype(int) - grey[~grey_mask].astype(int)).mean() > 10
    top = room[:6].reshape(-1, 3).mean(axis=0)  # BGR
    assert top[0] > top[2]  # bluish sky
