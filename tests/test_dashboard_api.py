"""Dashboard HTTP API over real run directories (synthetic runs written by RunStore, real PNG/EXR files,
a hand-written original-3DB log): values checked against details.log independently, security, live tailing."""
from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from threedb.dashboard.loader import Run
from threedb.dashboard.server import create_app
from threedb.dashboard.synthetic import make_run
from threedb.sim.render.files import read_exr

ROT = "render_args.OrientationControl.rotation_z"
ZOOM = "render_args.CameraControl.zoom"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("dash") / "run", 90)


def client(*runs: Path, **kw) -> TestClient:
    app = create_app([Run(p, index=i) for i, p in enumerate(runs)], **kw)
    return TestClient(app, base_url="http://127.0.0.1")


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "details.log").read_text().splitlines()]


def ref_bin(values: list) -> tuple[list, callable]:
    """Independent binning: <= 10 distinct numbers -> one bin each; else 10 equal-width bins."""
    distinct = sorted(set(values))
    if len(distinct) <= 10:
        return distinct, distinct.index
    lo, hi = distinct[0], distinct[-1]
    return list(range(10)), lambda v: min(int((v - lo) / (hi - lo) * 10), 9)


def test_heatmap_cells_match_details_log(run_dir):
    c = client(run_dir)
    data = c.get("/api/runs/0/heatmap", params={"x": ROT, "y": ZOOM}).json()
    rows = log_rows(run_dir)
    xs, xbin = ref_bin([r["render_args"]["OrientationControl.rotation_z"] for r in rows])
    ys, ybin = ref_bin([r["render_args"]["CameraControl.zoom"] for r in rows])
    assert len(data["x"]["labels"]) == 10 and data["y"]["labels"] == ["0.8", "1", "1.2"]
    for yi in range(len(ys)):
        for xi in range(len(xs)):
            cell = [r for r in rows if xbin(r["render_args"]["OrientationControl.rotation_z"]) == xi
                    and ybin(r["render_args"]["CameraControl.zoom"]) == yi]
            ok = [r for r in cell if r["status"] == "ok"]
            got = data["cells"][yi][xi]
            assert got["n"] == len(ok) and got["failed"] == len(cell) - len(ok)
            assert got["correct"] == sum(r["is_correct"] for r in ok)
            if ok:
                assert math.isclose(got["accuracy"], sum(r["is_correct"] for r in ok) / len(ok))
    # a slider fixes the blur bin; the rest is pooled
    fixed = c.get("/api/runs/0/heatmap", params={"x": ZOOM, "fix": "render_args.BlurControl.sigma:2"}).json()
    for xi, zoom in enumerate([0.8, 1.0, 1.2]):
        ok = [r for r in rows if r["status"] == "ok" and r["render_args"]["BlurControl.sigma"] == 2
              and r["render_args"]["CameraControl.zoom"] == zoom]
        assert fixed["cells"][0][xi]["n"] == len(ok)


def test_select_pages_through_exactly_the_cell(run_dir):
    c = client(run_dir)
    rows = log_rows(run_dir)
    want = {r["id"] for r in rows if r["render_args"]["CameraControl.zoom"] == 1.2 and r["model"] == "duck.glb"}
    got, page = [], 0
    while True:
        data = c.get("/api/runs/0/select", params=[("filter", f"{ZOOM}:2"), ("filter", "model:1"),
                                                   ("page", page), ("per_page", 4)]).json()
        got += [item["id"] for item in data["items"]]
        if not data["items"]:
            break
        page += 1
    assert data["total"] == len(want) and set(got) == want and len(got) == len(want)
    wrong = c.get("/api/runs/0/select", params={"outcome": "wrong", "per_page": 500}).json()
    assert {i["id"] for i in wrong["items"]} == {r["id"] for r in rows if r["is_correct"] is False}
    item = wrong["items"][0]
    row = next(r for r in rows if r["id"] == item["id"])
    assert item["predicted"][0] == ["mug", "duck", "bunny", "teapot"][row["prediction"][0]]
    assert item["true"] == [row["object_uid"]] and set(item["passes"]) == {"rgb", "mask", "uv"}


def test_images_by_known_id_and_pass_only(run_dir):
    c = client(run_dir)
    job = log_rows(run_dir)[0]["id"]
    r = c.get(f"/api/runs/0/images/{job}/rgb")
    assert r.status_code == 200 and r.content == (run_dir / "images" / f"{job}_rgb.png").read_bytes()
    assert c.get(f"/api/runs/0/images/{job}/uv").headers["content-type"] == "image/png"
    for url in [f"/api/runs/0/images/{job}/depth", "/api/runs/0/images/nope/rgb",
                "/api/runs/0/images/..%2F..%2Fdetails.log/rgb", "/api/runs/0/images/../details.log",
                f"/api/runs/0/images/{job}/..%2F..%2Fdetails", "/api/runs/0/images/%2E%2E/rgb",
                "/static/../loader.py", "/static/%2e%2e/%2e%2e/details.log", "/api/runs/3/params",
                "/api/runs/0/rows/unknown-id", f"/api/runs/0/companion/{job}/files/..%2Fmanifest",
                "/api/runs/0/companion/..%2F..%2Fetc/files/pose"]:
        r = c.get(url)
        assert r.status_code == 404, url
        assert "error" in r.json(), url
    assert "unknown id 'nope'" in c.get("/api/runs/0/images/nope/rgb").json()["error"]
    assert c.get("/api/runs/0/heatmap", params={"x": "bogus"}).status_code == 400
    assert c.get("/api/runs/0/heatmap", params={"fix": "model"}).status_code == 400
    assert c.get("/api/runs/0/select", params={"filter": "model:99"}).status_code == 400
    # DNS rebinding: another Host is refused
    assert c.get("/api/runs", headers={"host": "evil.example"}).status_code == 400
    headers = c.get("/").headers
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"


def test_companion_without_export_404s_and_post_needs_header(run_dir):
    c = client(run_dir)
    job = log_rows(run_dir)[0]["id"]
    r = c.get(f"/api/runs/0/companion/{job}")
    assert r.status_code == 404 and "no companion export" in r.json()["error"]
    assert c.get(f"/api/runs/0/companion/{job}/files/render").status_code == 404
    assert c.post(f"/api/runs/0/companion/{job}/export").status_code == 403
    assert c.post("/api/runs/0/companion/nope/export", headers={"X-Threedb": "1"}).status_code == 404
    page = c.get(f"/m/0/{job}")
    assert page.status_code == 200 and "companion.js" in page.text


def test_live_tail_partial_and_corrupt_lines(tmp_path, caplog):
    run_dir = make_run(tmp_path / "run", 10, with_images=False)
    c = client(run_dir)
    assert c.get("/api/runs").json()["runs"][0]["rows"] == 10
    log_path = run_dir / "details.log"
    lines = log_path.read_text().splitlines(keepends=True)
    extra = make_run(tmp_path / "more", 14, with_images=False)
    more = (extra / "details.log").read_text().splitlines(keepends=True)[10:]
    # a partially written last line is left for later, then read once complete
    with open(log_path, "a") as handle:
        handle.write(more[0][:25])
    first = c.get("/api/runs").json()["runs"][0]
    assert first["rows"] == 10 and first["skipped"] == 0
    with open(log_path, "a") as handle:
        handle.write(more[0][25:])
    second = c.get("/api/runs").json()["runs"][0]
    assert second["rows"] == 11 and second["version"] != first["version"]
    # a corrupt line is skipped with a warning; the lines after it are read
    with caplog.at_level(logging.WARNING):
        with open(log_path, "a") as handle:
            handle.write('{"is_correct": tru\n' + "".join(more[1:]))
        runs = c.get("/api/runs").json()["runs"][0]
    assert runs["rows"] == 14 and runs["skipped"] == 1
    assert any("corrupt line" in r.message for r in caplog.records)
    total = c.get("/api/runs/0/heatmap").json()["total"]
    assert total["n"] + total["failed"] == 14
    assert len(lines) == 10


def test_live_rows_from_a_resumed_store_appear(tmp_path):
    from threedb.dashboard import synthetic

    run_dir = make_run(tmp_path / "run", 6)
    c = client(run_dir)
    before = c.get("/api/runs/0/heatmap", params={"x": "model"}).json()
    synthetic.append_rows(run_dir, range(100, 103), uid="mug", correct=False, seed=5)
    after = c.get("/api/runs/0/heatmap", params={"x": "model"}).json()
    mug = before["x"]["labels"].index("mug.glb")
    assert after["rows"] == before["rows"] + 3
    assert after["cells"][0][mug]["n"] == before["cells"][0][mug]["n"] + 3
    assert after["cells"][0][mug]["correct"] == before["cells"][0][mug]["correct"]


def test_original_3db_log_opens(tmp_path):
    """3DB's JSON logger: no status/object_uid, is_correct as "True"/"False" strings, model X.blend."""
    (tmp_path / "images").mkdir()
    (tmp_path / "class_maps.json").write_text(json.dumps(["cat", "dog", "mug"]))
    lines = []
    for i in range(12):
        ok = i % 3 != 0
        lines.append(json.dumps({"is_correct": "True" if ok else "False", "loss": 0.5, "prediction": [2 if ok else 0],
                                 "id": f"{i:032x}", "environment": "studio.hdr", "model": "mug.blend",
                                 "render_args": {"OrientationControl.rotation_x": float(i % 4),
                                                 "CameraControl.view_point_x": 1.0},
                                 "output_type": "classes"}))
        cv2.imwrite(str(tmp_path / "images" / f"{i:032x}_rgb.png"), np.full((8, 8, 3), 40 * (i % 4), np.uint8))
    (tmp_path / "details.log").write_text("\n".join(lines) + "\n")
    c = client(tmp_path)
    data = c.get("/api/runs/0/heatmap", params={"x": "render_args.OrientationControl.rotation_x"}).json()
    assert [cell["n"] for cell in data["cells"][0]] == [3, 3, 3, 3]
    assert [cell["correct"] for cell in data["cells"][0]] == [2, 2, 2, 2]  # i % 3 == 0 wrong: 0, 3, 6, 9
    item = c.get("/api/runs/0/select", params={"filter": "render_args.OrientationControl.rotation_x:0"}).json()["items"][0]
    assert item["true"] == ["mug"] and item["predicted"] in (["mug"], ["cat"])
    assert c.get(f"/api/runs/0/images/{item['id']}/rgb").status_code == 200
    assert c.get("/api/runs/0/failures").status_code == 200
    assert c.get("/api/runs/0/objects").json()["objects"][0]["accuracy"] == pytest.approx(8 / 12)


def test_failure_modes_ranked_lowest_first(run_dir):
    c = client(run_dir)
    data = c.get("/api/runs/0/failures", params={"min_count": 4, "top": 30, "rank": "accuracy"}).json()
    accs = [m["accuracy"] for m in data["modes"]]
    assert accs == sorted(accs) and all(m["n"] >= 4 for m in data["modes"])
    rows = [r for r in log_rows(run_dir) if r["status"] == "ok"]
    worst = data["modes"][0]
    assert worst["kind"] in ("region", "composition")
    if worst["kind"] == "composition":
        assert len({p.rpartition(".")[0] for p in worst["params"]}) == 2
    # independently: no single-zoom region is below the top-ranked accuracy
    for zoom in (0.8, 1.0, 1.2):
        sel = [r["is_correct"] for r in rows if r["render_args"]["CameraControl.zoom"] == zoom]
        assert sum(sel) / len(sel) >= worst["accuracy"]
    ids = {r["id"]: r for r in rows}
    assert all(ids[e]["is_correct"] is False for m in data["modes"] for e in m["examples"])


def test_objects_environments_complexity(run_dir):
    c = client(run_dir)
    rows = [r for r in log_rows(run_dir) if r["status"] == "ok"]
    objects = c.get("/api/runs/0/objects").json()
    for o in objects["objects"]:
        sel = [r["is_correct"] for r in rows if r["model"] == o["model"]]
        assert o["n"] == len(sel) and o["accuracy"] == pytest.approx(sum(sel) / len(sel))
    conf = objects["confusion"]
    assert sum(map(sum, conf["counts"])) == len(rows)
    assert set(objects["curves"]) == {"environment", ROT, ZOOM, "render_args.BlurControl.sigma"}
    envs = c.get("/api/runs/0/environments").json()["environments"]
    for e in envs:
        per_object = [sum(r["is_correct"] for r in rows if r["environment"] == e["environment"] and r["model"] == m)
                      / sum(1 for r in rows if r["environment"] == e["environment"] and r["model"] == m)
                      for m in ("bunny.glb", "duck.glb", "mug.glb")]
        assert e["box"]["min"] == pytest.approx(min(per_object)) and e["box"]["median"] == pytest.approx(np.median(per_object))
    cx = c.get("/api/runs/0/complexity").json()
    assert len(cx["points"]) == len(rows) and sum(b["n"] for b in cx["bins"]) == len(rows)
    # the busy (forest) backgrounds score higher than the flat (city) ones
    env = {r["id"]: r["environment"] for r in rows}
    forest = [p["complexity"] for p in cx["points"] if env[p["id"]] == "forest.hdr"]
    city = [p["complexity"] for p in cx["points"] if env[p["id"]] == "city.hdr"]
    assert min(forest) > max(city)


def test_surface_heatmap_matches_uv_passes(run_dir):
    c = client(run_dir)
    data = c.get("/api/runs/0/surface", params={"model": "mug.glb"}).json()
    grid = data["grid"]
    seen = np.zeros((grid, grid), int)
    correct = np.zeros((grid, grid), int)
    rows = [r for r in log_rows(run_dir) if r["status"] == "ok" and r["model"] == "mug.glb"]
    for r in rows:
        ch = read_exr(run_dir / "images" / f"{r['id']}_uv.exr")
        mask = cv2.imread(str(run_dir / "images" / f"{r['id']}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        cells = np.zeros((grid, grid), bool)
        for u, v in zip(ch["U"][mask], ch["V"][mask]):
            cells[grid - 1 - min(int(v * grid), grid - 1), min(int(u * grid), grid - 1)] = True
        seen += cells
        correct += cells * int(r["is_correct"])
    assert data["rows"] == len(rows) and data["seen"] == seen.tolist()
    for (j, i), n in np.ndenumerate(seen):
        assert data["accuracy"][j][i] == (None if n == 0 else pytest.approx(correct[j, i] / n))
    png = c.get("/api/runs/0/surface.png", params={"model": "mug.glb"})
    image = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    assert png.status_code == 200 and image.shape == (256, 256, 3)
    assert c.get("/api/runs/0/surface", params={"model": "nope.glb"}).status_code == 400


def test_compare_joins_by_job_id(tmp_path):
    a = make_run(tmp_path / "a", 40, seed=3, model_seed=1, with_images=False)
    b = make_run(tmp_path / "b", 40, seed=3, model_seed=2, with_images=False)
    c = client(a, b)
    data = c.get("/api/compare", params={"a": 0, "b": 1, "param": "model"}).json()
    ra = {r["id"]: r for r in log_rows(a) if r["status"] == "ok"}
    rb = {r["id"]: r for r in log_rows(b) if r["status"] == "ok"}
    joined = ra.keys() & rb.keys()
    assert data["joined"] == len(joined)
    assert data["agreement"]["only_a"] == sum(ra[j]["is_correct"] and not rb[j]["is_correct"] for j in joined)
    for row in data["bins"]:
        sel = [j for j in joined if ra[j]["model"] == row["label"]]
        assert row["n"] == len(sel)
        assert row["accuracy_b"] == pytest.approx(sum(rb[j]["is_correct"] for j in sel) / len(sel))
    assert all(ra[d["id"]]["is_correct"] != rb[d["id"]]["is_correct"] for d in data["disagree"])
    assert c.get("/api/compare", params={"a": 0, "b": 7}).status_code == 404


def test_cli_reports_a_bad_run_dir(tmp_path):
    out = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "dashboard", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "missing" in out.stderr
    assert "Traceback" not in out.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "details.log").write_text("")
    (tmp_path / "x" / "class_maps.json").write_text("{not json")
    out = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "dashboard", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "class_maps.json" in out.stderr and "Traceback" not in out.stderr


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(proc: subprocess.Popen, url: str, context=None) -> dict:
    """GET ``url`` as JSON from the dashboard process ``proc``, waiting (60 s at most) for it to listen."""
    import time
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                return json.loads(response.read())
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)


def test_cli_serves_runs_and_reports_a_busy_port(run_dir, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "threedb.sim.cli", "dashboard", str(run_dir), str(run_dir),
                             "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        runs = get_json(proc, f"http://127.0.0.1:{port}/api/runs")["runs"]
        assert [r["rows"] for r in runs] == [90, 90]
        busy = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "dashboard", str(run_dir), "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and busy.stderr.startswith("error: --port") and "Traceback" not in busy.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_serves_https_with_a_given_certificate(run_dir, tmp_path):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "threedb.sim.cli", "dashboard", str(run_dir), "--port", str(port),
                             "--tls-cert", str(cert), "--tls-key", str(key)], stderr=subprocess.PIPE, text=True)
    try:
        runs = get_json(proc, f"https://127.0.0.1:{port}/api/runs", ssl.create_default_context(cafile=str(cert)))
        assert runs["runs"][0]["rows"] == 90
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    half = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "dashboard", str(run_dir), "--tls-cert", str(cert)],
                          capture_output=True, text=True, timeout=60)
    assert half.returncode == 2 and "--tls-key" in half.stderr and "Traceback" not in half.stderr
