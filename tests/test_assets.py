"""Asset discovery and up-front checks (no Blender needed, except to make a .blend fixture)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from threedb.sim.assets import (EnvironmentAsset, ObjectAsset, check_environment, check_mesh, load_catalog)
from threedb.sim.errors import AssetError

PACK_OBJECTS = {"mug", "duck", "teddy", "bunny", "soccer_ball", "lego", "jenga", "domino", "tray", "torus", "sphere"}
HDRIS = {"city", "courtyard", "forest", "interior", "night", "studio", "sunrise", "sunset"}


def test_default_pack_lists_existing_meshes_and_blenders_hdris():
    catalog = load_catalog("default")
    assert set(catalog.objects) == PACK_OBJECTS
    assert set(catalog.environments) == HDRIS
    for asset in catalog.objects.values():
        assert asset.path.is_file() and asset.class_name and "zlib" in asset.licence
    for env in catalog.environments.values():
        check_environment(env)


@pytest.mark.parametrize("uid", sorted(PACK_OBJECTS))
def test_every_pack_mesh_normalises_to_the_target_size(uid):
    norm = check_mesh(load_catalog().objects[uid], target_size=2.0)
    assert norm.n_faces > 0
    assert max(norm.extents) * norm.scale == pytest.approx(2.0)


def test_y_up_meshes_are_converted_to_z_up():
    # The duck stands on its feet along the file's +Y axis; after conversion its height is along Z.
    duck = load_catalog().objects["duck"]
    norm = check_mesh(duck)
    raw = trimesh.load(duck.path, force="mesh").extents
    assert norm.extents == pytest.approx((raw[0], raw[2], raw[1]))


def make_root(tmp_path: Path, layout: str = "ours") -> Path:
    root = tmp_path / layout
    meshes, envs = ("objects", "environments") if layout == "ours" else ("blender_models", "blender_environments")
    (root / meshes).mkdir(parents=True)
    (root / envs).mkdir()
    trimesh.creation.box(extents=(2, 1, 0.5)).export(root / meshes / "brick.ply")
    trimesh.creation.icosphere().export(root / meshes / "ball.glb")
    cv2.imwrite(str(root / envs / "grey.hdr"), np.full((8, 16, 3), 0.5, np.float32))
    return root


def test_user_root_in_our_layout_with_index(tmp_path):
    root = make_root(tmp_path)
    sub = root / "objects" / "cup"
    sub.mkdir()
    trimesh.creation.cylinder(radius=0.3, height=1).export(sub / "cup.obj")
    (root / "index.yaml").write_text("objects:\n  cup: {class_name: coffee cup, up_axis: Z, licence: CC0}\n")
    catalog = load_catalog(root)
    assert set(catalog.objects) == {"brick", "ball", "cup"}
    assert catalog.objects["cup"].class_name == "coffee cup"
    assert catalog.objects["ball"].up_axis == "Y"  # glTF is Y-up
    assert check_mesh(catalog.objects["brick"]).extents == pytest.approx((2, 1, 0.5))
    assert set(catalog.environments) == {"grey"}


def test_user_root_in_the_original_3db_layout(tmp_path):
    root = make_root(tmp_path, "3db")
    catalog = load_catalog(root)
    assert set(catalog.objects) == {"brick", "ball"} and set(catalog.environments) == {"grey"}


def test_missing_and_unrecognised_roots_are_named(tmp_path):
    with pytest.raises(AssetError, match="does not exist") as info:
        load_catalog(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    with pytest.raises(AssetError, match="expected objects/ and environments/"):
        load_catalog(tmp_path)


def asset(path: Path, fmt: str = "obj") -> ObjectAsset:
    return ObjectAsset(uid=path.stem, path=path, class_name=path.stem, format=fmt)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\x00\xff\xfe garbage \x00" * 20, "empty|cannot be read"),
    (b"v 0 0 0\nv 1 1 1\nv 2 2 2\nf 1 2 3\n", "degenerate"),
    (b"v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "non-finite"),
])
def test_bad_meshes_are_rejected_with_the_file_named(tmp_path, content, message):
    path = tmp_path / "bad.obj"
    path.write_bytes(content)
    with pytest.raises(AssetError, match=message) as info:
        check_mesh(asset(path))
    assert str(path) in str(info.value)


def test_missing_mesh_and_fake_blend_are_rejected(tmp_path):
    with pytest.raises(AssetError, match="does not exist"):
        check_mesh(asset(tmp_path / "gone.obj"))
    fake = tmp_path / "fake.blend"
    fake.write_bytes(b"not blender")
    with pytest.raises(AssetError, match="not a Blender file"):
        check_mesh(asset(fake, "blend"))


@pytest.mark.parametrize("suffix", [".hdr", ".exr", ".blend"])
def test_unreadable_environments_are_rejected(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"definitely not an image")
    with pytest.raises(AssetError) as info:
        check_environment(EnvironmentAsset("broken", path, "hdri"))
    assert str(path) in str(info.value)


def test_unknown_names_get_a_suggestion():
    catalog = load_catalog()
    with pytest.raises(AssetError, match="did you mean 'teddy'") as info:
        catalog.select_objects(["tedy"])
    assert "default_pack.yaml" in str(info.value) and "available: bunny" in str(info.value)
    with pytest.raises(AssetError, match="did you mean 'sunset'"):
        catalog.select_environments(["sunsett"])


def test_a_single_name_selects_one_asset_and_duplicates_count_once():
    catalog = load_catalog()
    assert [a.uid for a in catalog.select_objects("mug")] == ["mug"]
    assert [a.uid for a in catalog.select_objects(["duck", "mug", "duck"])] == ["duck", "mug"]
    assert [e.name for e in catalog.select_environments("studio")] == ["studio"]


def test_bunny_sits_upright():
    # The Stanford bunny is Y-up: read as Z-up it would stand on its back with its nose up.
    bunny = load_catalog().objects["bunny"]
    assert bunny.up_axis == "Y"
    raw = trimesh.load(bunny.path, force="mesh").extents
    assert check_mesh(bunny).extents == pytest.approx((raw[0], raw[2], raw[1]))


@pytest.mark.parametrize("entry, message", [
    ("cupp: {class_name: cup}", "objects.cupp: no such object file \\(did you mean 'cup'"),
    ("cup: {up_axis: X}", "objects.cup.up_axis: 'X' is not Z or Y"),
    ("cup: {colour: red}", "objects.cup: unexpected \\['colour'\\]"),
    ("ball: {up_axis: Z}", "glTF files are always Y-up"),
])
def test_index_yaml_mistakes_are_named(tmp_path, entry, message):
    root = make_root(tmp_path)
    trimesh.creation.cylinder(radius=0.3, height=1).export(root / "objects" / "cup.obj")
    (root / "index.yaml").write_text(f"objects:\n  {entry}\n")
    with pytest.raises(AssetError, match=message) as info:
        load_catalog(root)
    assert str(root / "index.yaml") in str(info.value)


def test_index_yaml_up_axis_is_case_insensitive(tmp_path):
    root = make_root(tmp_path)
    (root / "index.yaml").write_text("objects:\n  brick: {up_axis: y}\n")
    assert load_catalog(root).objects["brick"].up_axis == "Y"


def test_asset_modules_do_not_import_bpy():
    code = "import sys, threedb.sim.assets as a; a.load_catalog(); assert 'bpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
