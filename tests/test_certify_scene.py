"""Certified robustness over 3D scene parameters: the ``smoothing`` policy and ``threedb certify scene``.

Real renders (bpy, 64 px, 4 samples) of the shipped ``configs/certify_scene_quickstart.yaml`` restricted
to the lego brick, classified by the real quickstart model through ``threedb run``; then the analysis,
its report directory in the dashboard, resume, and bad input. The policy's own properties (ids, seeds,
prefix property, clip/wrap, errors) are checked without rendering.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from run_cli import finish, start_run
from scipy.stats import norm
from starlette.testclient import TestClient

from threedb.controls.registry import resolve_control
from threedb.policies.registry import make_policy
from threedb.policies.smoothing import SmoothingPolicy, parse_sample_id
from threedb.policies.space import SearchSpace
from threedb.robustness.smoothing.statistics import lower_confidence_bound
from threedb.sim.config import load_config
from threedb.sim.errors import ConfigError, ThreeDBError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "certify_scene_quickstart.yaml"
N0, N = 8, 48                                  # selection / estimation samples per base point in these tests
LEGO = ["--set", "assets.objects=[lego]", "--set", f"policy.n0={N0}", "--set", f"policy.n={N}",
        "--render-workers", "1", "--evaluators", "1"]
TYPICAL = "[{orientation.rotation_x: 0.0, orientation.rotation_z: 0.0}]"


def ids(run_dir: Path) -> list[str]:
    path = run_dir / "details.log"
    if not path.is_file():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.fixture(scope="module")
def lego_run(tmp_path_factory) -> Path:
    """The shipped config on the lego brick: 3 base points x (8 + 48) renders, analysed into run/certify_scene."""
    from threedb.evaluators.certify.scene_cli import main

    out = tmp_path_factory.mktemp("certify_scene") / "run"
    result = finish(start_run(CONFIG, out, *LEGO), timeout=400)
    assert result["done"] == 3 * (N0 + N) and result["failed"] == 0
    assert main([str(out)]) == 0
    return out


def report_rows(report_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (report_dir / "examples.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ real renders

def test_rows_carry_base_point_and_phase(lego_run):
    rows = [json.loads(line) for line in (lego_run / "details.log").read_text().splitlines()]
    parsed = [parse_sample_id(r["id"]) for r in rows]
    assert all(p is not None for p in parsed)
    for base in range(3):
        assert sorted(k for b, ph, k in parsed if b == base and ph == "sel") == list(range(N0))
        assert sorted(k for b, ph, k in parsed if b == base and ph == "est") == list(range(N))
    # the logged values are theta0 + e: the selection sample 0 of base point 2 is near its tilt 1.45 rad
    b2 = next(r for r in rows if r["id"].endswith("b0002-sel-000000"))
    assert abs(b2["render_args"]["OrientationControl.rotation_x"] - 1.45) < 4 * 0.05 * math.pi


def test_odd_pose_gets_a_smaller_radius_or_abstains(lego_run):
    """(a) upright poses (inside the training tilts +-0.5 rad) vs lying on its side (1.45 rad)."""
    rows = report_rows(lego_run / "certify_scene")
    assert [(r["object"], r["environment"], r["base"], r["status"]) for r in rows] == [
        ("lego", "studio", b, "ok") for b in range(3)]

    def correct_radius(r: dict) -> float:   # the certified radius of the true label (0: abstain or wrong)
        return r["radius_std"] if r["correct"] and not r["abstain"] else 0.0

    typical, odd = rows[0], rows[2]
    assert typical["correct"] and not typical["abstain"] and typical["radius_std"] > 0
    assert correct_radius(odd) < correct_radius(typical)
    assert odd["p_hat"] < typical["p_hat"]
    # the radius in each parameter's units: sigma_i * R * range width, radians also in degrees
    r = typical["radius_params"]["orientation.rotation_x"]
    assert r["value"] == pytest.approx(0.05 * typical["radius_std"] * 2 * 1.5708)
    assert r["degrees"] == pytest.approx(math.degrees(r["value"])) and r["unit"] == "rad"
    assert typical["radius"] == pytest.approx(0.05 * typical["radius_std"])
    assert typical["radius_std"] == pytest.approx(float(norm.ppf(typical["p_lower"])))


def test_doubling_n_tightens_the_bound(lego_run, tmp_path):
    """(b) the first n = 24 estimation samples vs all 2n = 48, against the Clopper-Pearson values."""
    from threedb.evaluators.certify.scene import certify_scene

    _, half, _ = certify_scene(lego_run, out=tmp_path / "half", max_n=N // 2)
    full = report_rows(lego_run / "certify_scene")
    alpha = full[0]["alpha"]
    for h, f in zip(half, full):
        assert (h["n"], f["n"]) == (N // 2, N)
        assert h["candidate"] == f["candidate"]                  # the same selection samples
        assert h["p_lower"] == pytest.approx(lower_confidence_bound(h["count"], N // 2, alpha))
        assert f["p_lower"] == pytest.approx(lower_confidence_bound(f["count"], N, alpha))
        assert h["count"] <= f["count"] <= h["count"] + N // 2  # the half is a prefix of the full sample
        # the same hit proportion at 2n: a tighter bound, its gap shrinking as the binomial predicts
        k = h["count"]
        p_hat = k / (N // 2)
        doubled = lower_confidence_bound(2 * k, N, alpha)
        assert doubled > h["p_lower"]
        ratio = (p_hat - doubled) / (p_hat - h["p_lower"])
        assert 0.45 < ratio < 0.8, ratio                         # ~1/sqrt(2) (1/2 when every sample hits)


def test_resume_gives_the_same_certificate(lego_run, tmp_path):
    """(c) a run of the typical base point alone, killed and resumed, certifies exactly what the
    uninterrupted run certified there (base point 0 has the same seed and samples in both)."""
    from threedb.evaluators.certify.scene import certify_scene

    out = tmp_path / "run"
    extra = [*LEGO, "--set", f"policy.base_points={TYPICAL}"]
    proc = start_run(CONFIG, out, *extra)
    deadline = time.monotonic() + 300
    while len(ids(out)) < 12 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    before = ids(out)
    assert 12 <= len(before) < N0 + N
    _, partial, _ = certify_scene(out, out=tmp_path / "partial")
    assert partial[0]["status"] == "incomplete" and partial[0]["abstain"]
    result = finish(start_run(CONFIG, out, *extra, "--resume"), timeout=400)
    assert result["replayed"] == len(before)
    assert sorted(ids(out)) == sorted(i for i in ids(lego_run) if "-b0000-" in i)
    _, resumed, _ = certify_scene(out, out=tmp_path / "resumed")
    full = report_rows(lego_run / "certify_scene")[0]
    for key in ("status", "prediction", "candidate", "count", "n", "n0", "p_lower", "radius_std", "radius",
                "radius_params", "counts", "theta0"):
        assert resumed[0][key] == full[key], key


def test_report_directory_in_the_dashboard(lego_run):
    from threedb.dashboard.cli import open_dirs
    from threedb.dashboard.server import create_app

    report_dir = lego_run / "certify_scene"
    runs, reports = open_dirs([str(lego_run), str(report_dir)])
    assert [r.path for r in runs] == [lego_run.resolve()] and [r.path for r in reports] == [report_dir.resolve()]
    client = TestClient(create_app(runs, reports=reports), base_url="http://127.0.0.1")
    listed = client.get("/api/reports").json()["reports"]
    assert [(r["job"], r["state"]) for r in listed] == [("certify scene", "ready")]
    assert listed[0]["headline"]["base_points"] == 3
    full = client.get("/api/reports/0").json()
    table = full["tables"][0]
    assert table["columns"][:3] == ["object", "environment", "base"] and len(table["rows"]) == 3
    assert "radius rotation_x (deg)" in table["columns"]
    assert [p["title"] for p in full["plots"]] == ["lego: certified radius per base point"]
    png = client.get(f"/api/reports/0/files/{full['plots'][0]['png']}")
    svg = client.get(f"/api/reports/0/files/{full['plots'][0]['svg']}")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert svg.status_code == 200 and b"<svg" in svg.content
    assert client.get("/api/runs").json()["runs"][0]["rows"] == 3 * (N0 + N)


def test_cli_through_threedb_certify_scene(lego_run, tmp_path):
    """``threedb certify scene RUN --out DIR --alpha A`` (the real entry point); refuses a non-empty --out."""
    cmd = [sys.executable, "-m", "threedb.sim.cli", "certify", "scene", str(lego_run), "--out", str(tmp_path / "r"),
           "--alpha", "0.05"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    headline = json.loads(done.stdout.strip().splitlines()[-1])["headline"]
    assert headline["base_points"] == 3
    rows = report_rows(tmp_path / "r")
    assert all(r["alpha"] == 0.05 for r in rows)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, timeout=120).returncode == 0
    bad = subprocess.run(cmd[:-2] + ["--alpha", "1.5", "--overwrite"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--alpha" in bad.stderr and bad.stderr.count("error:") == 1


def test_analysis_refuses_a_run_of_another_policy(lego_run, tmp_path):
    from threedb.evaluators.certify.scene import certify_scene

    fake = tmp_path / "grid_run"
    fake.mkdir()
    config = yaml.safe_load((lego_run / "config.resolved.yaml").read_text())
    config["policy"] = {"type": "grid", "samples_per_dim": 2}
    (fake / "config.resolved.yaml").write_text(yaml.safe_dump(config))
    (fake / "details.log").write_text("")
    with pytest.raises(ConfigError, match="smoothing") as err:
        certify_scene(fake)
    assert err.value.key == "policy.type"
    with pytest.raises(ThreeDBError, match="not a run directory"):
        certify_scene(tmp_path)


# ------------------------------------------------------------------------------- the policy alone

def space(**ranges) -> SearchSpace:
    entry = {"type": "orientation", "rotation_x": [-1.5708, 1.5708], "rotation_z": [-3.14159, 3.14159], **ranges}
    cam = {"type": "camera", "zoom_factor": [0.5, 2.0]}
    return SearchSpace([resolve_control(e, key=f"controls[{i}]", file=None, base_dir=REPO)
                        for i, e in enumerate([entry, cam])])


BASE = {"type": "smoothing", "sigma": 0.1, "n0": 4, "n": 8,
        "smooth": ["orientation.rotation_x", "orientation.rotation_z"], "wrap": ["orientation.rotation_z"]}


def all_points(policy) -> list:
    out = []
    while not policy.exhausted:
        out += policy.propose(5)
    return out


def test_policy_samples_ids_seeds_and_edges():
    pol = make_policy({**BASE, "base_points": [{"orientation.rotation_x": 1.5, "orientation.rotation_z": 3.0,
                                                "camera.zoom_factor": 0.7}, {}]}, space(), seed=3)
    assert isinstance(pol, SmoothingPolicy) and pol.total() == 2 * 12
    props = all_points(pol)
    assert [p.id for p in props[:6]] == ["b0000-sel-000000", "b0000-sel-000001", "b0000-sel-000002",
                                         "b0000-sel-000003", "b0000-est-000000", "b0000-est-000001"]
    assert props[12].id == "b0001-sel-000000"
    pts = np.array([p.point for p in props[:12]])
    assert pts.min() >= 0 and pts.max() <= 1
    assert (pts[:, 0] == 1.0).any()                               # tilt 1.5 near the top: clipped at the edge
    assert (pts[:, 1] < 0.5).any()                                # turn 3.0 near +pi: wrapped round to -pi
    assert all(p.values["camera"]["zoom_factor"] == pytest.approx(0.7) for p in props[:12])   # not smoothed
    assert all(p.values["camera"]["zoom_factor"] == pytest.approx(1.25) for p in props[12:])  # centre
    # the noise is N(0, sigma^2) in normalised units, from a seed per base point
    noise = pol.noise(0)
    assert noise.shape == (12, 2) and np.allclose(noise / 0.1, np.random.default_rng(pol.base_seed(0))
                                                  .standard_normal((12, 2)))
    # same proposals however propose() is chunked; base point 1 does not depend on base point 0
    again = make_policy({**BASE, "base_points": [{"orientation.rotation_x": 1.5, "orientation.rotation_z": 3.0,
                                                  "camera.zoom_factor": 0.7}, {}]}, space(), seed=3)
    assert [p.point for p in again.propose(100)] == [p.point for p in props]
    alone = make_policy({**BASE, "base_points": [{}, {}]}, space(), seed=3)
    assert [p.point for p in all_points(alone)[12:]] == [p.point for p in props[12:]]


def test_policy_prefix_property_and_sigma_per_parameter():
    """The first n estimation samples of a run with 2n are those of a run with n (so --max-n n of a 2n
    run is an n run), and a sigma mapping smooths its keys with their own sigmas."""
    small = make_policy({**BASE, "n": 8}, space(), seed=0)
    big = make_policy({**BASE, "n": 16}, space(), seed=0)
    assert [p.point for p in all_points(big)[:12]] == [p.point for p in all_points(small)]
    pol = make_policy({"type": "smoothing", "n": 4, "n0": 2, "sigma": {"camera.zoom_factor": 0.2}}, space(), seed=0)
    assert pol.smoothed == ["camera.zoom_factor"] and pol.sigmas == {"camera.zoom_factor": 0.2}
    assert all(p.values["orientation"]["rotation_x"] == pytest.approx(0.0) for p in all_points(pol))
    grid = make_policy({**BASE, "base_points": {"grid": 3}}, space(), seed=0)
    assert len(grid.bases) == 9 and grid.bases[0][:2] == (0.0, 0.0)
    assert len(make_policy({**BASE, "base_points": {"random": 4}}, space(), seed=0).bases) == 4


@pytest.mark.parametrize("options, key, words", [
    ({"sigma": 0}, "policy.sigma", "positive"),
    ({"sigma": -0.1}, "policy.sigma", "positive"),
    ({"sigma": {"orientation.rotation_x": 0.1, "orientation.rotation_z": 0.0}}, "policy.sigma.orientation.rotation_z",
     "positive"),
    ({"smooth": ["orientation.rotatoin_x"]}, "policy.smooth[0]", "did you mean 'orientation.rotation_x'"),
    ({"smooth": ["orientation.rotation_y"]}, "policy.smooth[0]", "fixed in the config"),
    ({"sigma": {"camera.zom_factor": 0.1}, "smooth": None, "wrap": None}, "policy.sigma.camera.zom_factor",
     "unknown parameter"),
    ({"n0": 9}, "policy.n0", "must not exceed n"),
    ({"n": 0}, "policy.n", ">= 1"),
    ({"alpha": 1.5}, "policy.alpha", "(0, 1)"),
    ({"wrap": ["camera.zoom_factor"]}, "policy.wrap[0]", "not smoothed"),
    ({"base_points": [{"orientation.rotation_x": 2.0}]}, "policy.base_points[0].orientation.rotation_x", "range"),
    ({"base_points": [{"orientation.rotaton_x": 0.0}]}, "policy.base_points[0].orientation.rotaton_x",
     "did you mean"),
    ({"base_points": {"grid": 0}}, "policy.base_points.grid", ">= 1"),
    ({"samples": 3}, "policy.samples", "has no option"),
])
def test_policy_bad_input_one_clear_error(options, key, words):
    """(d) one ConfigError naming the key, for each bad option."""
    with pytest.raises(ConfigError) as err:
        make_policy({**BASE, **options}, space(), seed=0, file="exp.yaml")
    assert err.value.key == key and err.value.file == "exp.yaml", str(err.value)
    assert words in str(err.value)


def test_bad_policy_in_a_config_file_names_file_and_key(tmp_path):
    """(d) through the config loader and the run pipeline's make_policy, before any render."""
    from threedb.sim.experiment import prepare

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base_config: {CONFIG}\npolicy:\n  n0: 64\n")
    experiment = load_config(bad)
    with pytest.raises(ConfigError) as err:
        make_policy(experiment.policy, prepare(experiment).space, seed=0, file=experiment.source)
    assert err.value.key == "policy.n0" and str(bad) in str(err.value)
    done = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "run", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "policy.n0" in done.stderr and not ids(tmp_path / "o")
