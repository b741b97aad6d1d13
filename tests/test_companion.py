"""The physical-recreation companion export: a real run (64 px), re-rendered in Blender, USDZ read back by pxr."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from threedb.companion.export import FILES, export_file, export_ids, export_one, read_manifest
from threedb.companion.geometry import project
from threedb.companion.overlay import edge_mask, edge_overlay
from threedb.companion.source import ExportError

REPO = Path(__file__).resolve().parents[1]
IDS = ["city-mug-p000001", "city-duck-p000002"]
FOCAL_MM, SENSOR_MM, RES = 50.0, 36.0, 64


def _config(tmp: Path) -> Path:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_net import TinyNet

    torch.manual_seed(0)
    torch.save(TinyNet().state_dict(), tmp / "tiny.pt")
    (tmp / "classes.json").write_text(json.dumps(["mug", "duck", "other"]))
    (tmp / "map.json").write_text(json.dumps({"mug": 0, "duck": 1}))
    config = {
        "seed": 0,
        "assets": {"root": "default", "objects": ["mug", "duck"], "environments": ["city"]},
        "render": {"resolution": RES, "samples": 2, "passes": ["mask"], "threads": 1},
        # a rotated, scaled object seen off-axis: every part of the pose is exercised
        "controls": [{"type": "orientation", "rotation_z": [-3.0, 3.0], "rotation_x": 0.3},
                     {"type": "scale", "factor": 0.8},
                     {"type": "camera", "view_point_x": [-1.0, 1.0], "zoom_factor": 1.3,
                      "focal_length": FOCAL_MM}],
        "policy": {"type": "grid", "samples_per_dim": 2},
        "inference": {"file": str(REPO / "tests" / "tiny_net.py"), "class": "TinyNet", "weights": "tiny.pt",
                      "resolution": [RES, RES], "label_map": "classes.json", "device": "cpu",
                      "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        "evaluation": {"type": "classification", "args": {"classmap_path": "map.json"}},
        "logging": {"extra_passes": ["mask"]},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "threedb.sim.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A finished run of 8 jobs, and 2 of its ids exported through the CLI."""
    tmp = tmp_path_factory.mktemp("companion")
    run = tmp / "run"
    done = subprocess.run([sys.executable, "-m", "threedb.sim.run.local", str(_config(tmp)), "--out", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp / "export"
    result = _cli("companion", "export", str(run), "--ids", *IDS, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported 2 render(s)" in result.stdout
    return run, out


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image[..., ::-1] if image.ndim == 3 and image.shape[2] == 3 else image


def test_manifest_and_files(exported):
    run, out = exported
    manifest = read_manifest(out)
    assert manifest["ids"] == IDS and set(manifest["renders"]) == set(IDS)
    assert manifest["source_run"]["path"] == str(run.resolve()) and manifest["source_run"]["seed"] == 0
    assert manifest["versions"]["threedb"] and manifest["versions"]["bpy"] == "5.0.1"
    assert manifest["units"].startswith("metres") and "+Z up" in manifest["axes"]["world"]
    assert "+Y up" in manifest["axes"]["world_y_up"]
    logged = {json.loads(line)["id"]: json.loads(line) for line in (run / "details.log").read_text().splitlines()}
    for job_id in IDS:
        entry = manifest["renders"][job_id]
        assert entry["render_args"] == logged[job_id]["render_args"] and entry["seed"] == logged[job_id]["seed"]
        for kind, name in FILES.items():
            path = out / entry["files"][kind]
            assert path == export_file(out, job_id, kind) == out / job_id / name
            assert path.is_file() and path.stat().st_size > 0, path
    assert len((run / "details.log").read_text().splitlines()) == 8  # the run is left unchanged


def test_rerender_matches_logged_image(exported):
    run, out = exported
    for job_id in IDS:
        logged, again = _rgb(run / "images" / f"{job_id}_rgb.png"), _rgb(out / job_id / "render.png")
        assert again.shape == logged.shape == (RES, RES, 3)
        assert np.abs(again.astype(int) - logged.astype(int)).max() <= 1
        check = read_manifest(out)["renders"][job_id]["rerender_check"]
        assert check["logged_image"] and check["max_abs_diff"] <= 1


def test_overlay_outlines_the_object(exported):
    run, out = exported
    for job_id in IDS:
        overlay = _rgb(out / job_id / "overlay.png")
        assert overlay.shape == (RES, RES, 4) and overlay.dtype == np.uint8
        alpha = overlay[..., 3]
        assert set(np.unique(alpha)) == {0, 255}
        assert (overlay[alpha == 255][:, :3] == (0, 255, 0)).all()
        mask = _rgb(run / "images" / f"{job_id}_mask.png") > 0           # logged by the run itself
        kernel = np.ones((3, 3), np.uint8)
        near_object = cv2.dilate(mask.astype(np.uint8), kernel) > 0
        boundary = mask & ~(cv2.erode(mask.astype(np.uint8), kernel) > 0)
        near_edges = cv2.dilate((alpha > 0).astype(np.uint8), kernel) > 0
        assert mask.sum() > 50 and boundary.sum() > 20
        assert (alpha[~near_object] == 0).all()                          # nothing away from the object
        assert (near_edges[boundary]).mean() > 0.9                       # the silhouette is drawn
        assert (alpha > 0).sum() < 0.6 * mask.sum()                      # lines, not the filled object


def test_edge_mask_silhouette_and_occluding_contour():
    mask = np.zeros((40, 40), bool)
    mask[8:32, 8:32] = True
    depth = np.full((40, 40), np.inf, np.float32)
    depth[mask] = 2.0
    depth[16:24, 16:24] = 1.5  # a nearer part in front of the body
    edges = edge_mask(mask, depth)
    assert edges[8:32, 8].any() and edges[8, 8:32].any()               # silhouette
    assert edges[15, 16:24].all() and edges[16:24, 24].all()           # contour just outside the near part
    assert not edges[17:23, 17:23].any() and not edges[:5].any()
    assert not edge_mask(mask)[12:28, 12:28].any()                      # without depth: silhouette only
    assert edge_overlay(mask, depth, width_px=3)[..., 3].sum() > edge_overlay(mask, depth)[..., 3].sum()


def test_intrinsics_and_poses(exported):
    _, out = exported
    for job_id in IDS:
        pose = json.loads((out / job_id / "pose.json").read_text())
        K = np.array(pose["intrinsics"]["K"])
        f = FOCAL_MM / SENSOR_MM * RES
        assert np.allclose(K, [[f, 0, RES / 2], [0, f, RES / 2], [0, 0, 1]])
        assert pose["image_size"] == [RES, RES]
        assert math.isclose(pose["intrinsics"]["fov_x_deg"], math.degrees(2 * math.atan(SENSOR_MM / 2 / FOCAL_MM)))
        c2w_cv, c2w_bl = np.array(pose["camera_to_world_opencv"]), np.array(pose["camera_to_world_blender"])
        o2w, o2c = np.array(pose["object_to_world"]), np.array(pose["object_in_camera_opencv"])
        assert np.allclose(c2w_cv[:3, :3] @ c2w_cv[:3, :3].T, np.eye(3), atol=1e-5)  # rigid camera
        assert np.allclose(c2w_cv[:, 0], c2w_bl[:, 0]) and np.allclose(c2w_cv[:3, 2], -c2w_bl[:3, 2])
        assert math.isclose(pose["object_scale"], 0.8, rel_tol=1e-5)
        assert np.allclose(c2w_cv @ o2c, o2w, atol=1e-6)
        # the object's centre is in front of the camera and projects into the image
        assert o2c[2, 3] > 0
        u, v = project(o2w[:3, 3][None], pose)[0]
        assert 0 < u < RES and 0 < v < RES
        y_up = np.array(pose["y_up"]["object_to_world"])
        assert np.allclose(y_up[1], o2w[2]) and np.allclose(y_up[2], -o2w[1])   # (x, y, z) -> (x, z, -y)


def _usd_points(path: Path) -> np.ndarray:
    """Points of every mesh of a USDZ (read with pxr) in the file's Y-up world frame."""
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert UsdGeom.GetStageMetersPerUnit(stage) == pytest.approx(1.0)
    assert stage.GetDefaultPrim().IsValid()
    cache = UsdGeom.XformCache()
    points = []
    for prim in stage.Traverse():
        if prim.IsA(UsdGeom.Mesh):
            local = np.array(UsdGeom.Mesh(prim).GetPointsAttr().Get(), dtype=np.float64)
            m = np.array(cache.GetLocalToWorldTransform(prim), dtype=np.float64)  # row vectors: p @ m
            points.append(np.c_[local, np.ones(len(local))] @ m)
    assert points, f"{path} holds no mesh"
    return np.concatenate(points)[:, :3]


def test_usdz_round_trip(exported):
    run, out = exported
    for job_id in IDS:
        pose = json.loads((out / job_id / "pose.json").read_text())
        usd = _usd_points(out / job_id / "object.usdz")
        assert usd[:, 1].min() == pytest.approx(0.0, abs=1e-5)   # resting on the AR floor
        lift = pose["usdz"]["lift_m"]
        world = np.c_[usd[:, 0], -usd[:, 2], usd[:, 1] - lift]     # (x, y, z)_usd -> Blender Z-up world
        bounds = pose["object_bounds_world"]
        assert lift == pytest.approx(-bounds["min"][2])
        assert np.allclose(pose["usdz"]["object_bounds"]["min"], usd.min(0), atol=1e-4)
        assert np.allclose(world.min(0), bounds["min"], atol=1e-4)
        assert np.allclose(world.max(0), bounds["max"], atol=1e-4)
        # in the object frame the mesh is the normalised one: centred, largest extent object_size
        o2w = np.array(pose["object_to_world"])
        local = (np.linalg.inv(o2w) @ np.c_[world, np.ones(len(world))].T).T[:, :3]
        lo, hi = local.min(0), local.max(0)
        assert np.allclose((lo + hi) / 2, 0, atol=1e-3)
        assert math.isclose((hi - lo).max(), pose["object_size"], rel_tol=1e-3)
        # projected through the exported camera, the USDZ covers the run's own mask
        uv = project(world, pose)
        mask = _rgb(run / "images" / f"{job_id}_mask.png") > 0
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        px = np.clip(np.floor(uv).astype(int), 0, RES - 1)
        assert grown[px[:, 1], px[:, 0]].mean() > 0.99
        ys, xs = np.nonzero(mask)
        assert np.allclose(uv.min(0), [xs.min(), ys.min()], atol=1.0)
        assert np.allclose(uv.max(0), [xs.max() + 1, ys.max() + 1], atol=1.0)


def test_bad_ids_are_refused(exported, tmp_path):
    run, out = exported
    target = tmp_path / "other"
    for bad in ("city-mug-p999999", "../etc/passwd", ".", ""):
        with pytest.raises(ExportError, match="no job with id") as info:
            export_ids(run, ["city-mug-p000001", bad], target)
        assert repr(bad) in str(info.value)
    assert not target.exists()  # checked before anything is written
    result = _cli("companion", "export", str(run), "--ids", "../etc/passwd", "--out", str(target))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {run.resolve() / 'details.log'}: no job with id '../etc/passwd'"]
    with pytest.raises(ExportError, match="not a threedb run directory|missing"):
        export_ids(tmp_path, IDS, target)
    with pytest.raises(ExportError, match="was not exported"):
        export_file(out, "city-mug-p000000", "usdz")


def test_export_one_adds_to_an_export(exported, tmp_path):
    import shutil

    run, out = exported
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    entry = export_one(run, "city-duck-p000000", copy)
    assert entry["files"]["usdz"] == "city-duck-p000000/object.usdz"
    assert entry["rerender_check"]["max_abs_diff"] <= 1
    manifest = read_manifest(copy)
    assert manifest["ids"] == [*IDS, "city-duck-p000000"]
    assert all((copy / job_id / "pose.json").is_file() for job_id in manifest["ids"])
