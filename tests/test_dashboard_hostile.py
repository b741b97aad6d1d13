"""The dashboard API over run directories holding hostile content (issue 17): log lines that are deep,
non-finite, malformed or aimed at paths; symlinks and special files among the images; decompression
bombs; huge numbers in URLs. Every endpoint answers 200 (or a 4xx naming the problem), never 500, and
what was left out is counted."""
from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from starlette.testclient import TestClient

from threedb.dashboard import files
from threedb.dashboard.loader import Run
from threedb.dashboard.server import create_app
from threedb.dashboard.synthetic import make_run

ZOOM = "render_args.CameraControl.zoom"
DEEP = 100_000
GOOD = {"is_correct": True, "loss": 0.1, "prediction": [0], "environment": "city.hdr", "model": "mug.glb",
        "render_args": {"OrientationControl.rotation_z": 0.5, "CameraControl.zoom": 1.0, "BlurControl.sigma": 1},
        "output_type": "classes", "status": "ok", "error": None, "object_uid": "mug"}


def row(job_id: str, **changes) -> dict:
    out = {**GOOD, "id": job_id, **changes}
    out["render_args"] = {**GOOD["render_args"], **changes.get("render_args", {})}
    return out


#: (raw line, reason it is skipped) -- lines that cannot be rows
SKIPPED = [
    ("[" * DEEP + "]" * DEEP, "nested too deep"),
    ('{"id": "deep-value", "x": ' + "[" * DEEP + "]" * DEEP + "}", "nested too deep"),
    ('{"id": "truncated", "is_correct": tru', "not JSON"),
    (b'{"id": "bad-utf8-\xff\xfe"}', "not JSON"),
    ("[1, 2, 3]", "not a JSON object"),
    (json.dumps({k: v for k, v in row("x").items() if k != "id"}), "without an id"),
    (json.dumps(row("x") | {"id": {"nested": 1}}), "without an id"),
    (json.dumps(row("x") | {"id": True}), "without an id"),
    (json.dumps(row("x") | {"render_args": [1, 2]}), "render_args is not an object"),
    ('{"id": "too-many-digits", "loss": ' + "9" * 5000 + "}", "not JSON"),
]
#: rows kept with some value treated as missing (counted in bad_values)
BAD_VALUES = [
    '{"id": "pred-inf", "status": "ok", "is_correct": false, "model": "mug.glb", "environment": "city.hdr", "prediction": [Infinity]}',
    '{"id": "pred-nan", "status": "ok", "is_correct": false, "model": "mug.glb", "environment": "city.hdr", "prediction": [NaN]}',
    '{"id": "zoom-nan", "status": "ok", "is_correct": true, "model": "duck.glb", "environment": "city.hdr", "prediction": [1], '
    '"render_args": {"CameraControl.zoom": NaN}}',
    '{"id": "zoom-inf", "status": "ok", "is_correct": true, "model": "duck.glb", "environment": "city.hdr", "prediction": [1], '
    '"render_args": {"CameraControl.zoom": -Infinity}}',
    '{"id": "zoom-1e400", "status": "ok", "is_correct": true, "model": "duck.glb", "environment": "city.hdr", "prediction": [1], '
    '"render_args": {"CameraControl.zoom": 1e400, "BlurControl.sigma": ' + "9" * 400 + "}}",
    '{"id": "verdict-nan", "status": "ok", "is_correct": NaN, "model": "mug.glb", "environment": "city.hdr", "prediction": [0]}',
]
#: rows kept as they are, whose other content must still not break a view
ODD = [
    json.dumps(row("odd-boxes", boxes=[[0.1, 0.1, 0.5, 0.5, 0.9, 0], [0, 0, 1, 1, "x", 0], [0, 0, 1, 1, 0.5, 1e308],
                                      "not a box", [None] * 6])).replace("1e+308", "NaN"),
    json.dumps(row("odd-error", error=json.loads("[" * 500 + "]" * 500), boxes="nope")),
    json.dumps(row("odd-nested-arg", render_args={"Extra.nested": [[1, 2]], "model": "collides with model"})),
    json.dumps(row("../../../../etc/passwd")),
    json.dumps(row("nul\u0000id")),
    '{"id": "surrogate-\\ud800", "status": "ok", "is_correct": true, "model": "mug-\\udfff.glb", "environment": "city.hdr"}',
    json.dumps(row("odd-nan-inside-list", render_args={"OrientationControl.rotation_z": 0.1, "Extra.list": [1.5]})).replace("1.5", "NaN"),
    json.dumps(row("odd-prediction", prediction="mug")),
    json.dumps(row(12345)),
]


def strict_json(text: str):
    """JSON as a browser parses it: NaN/Infinity are errors."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def client(*runs: Path) -> TestClient:
    app = create_app([Run(p, index=i) for i, p in enumerate(runs)])
    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def append(run_dir: Path, lines) -> None:
    with open(run_dir / "details.log", "ab") as handle:
        for line in lines:
            handle.write((line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")) + b"\n")


def endpoints(c: TestClient, ids: list) -> list[str]:
    params = c.get("/api/runs/0/params").json()["params"]
    names = [p["name"] for p in params]
    urls = ["/api/runs", "/api/runs/0/params", "/api/runs/0/select?per_page=500", "/api/runs/0/select?outcome=wrong",
            "/api/runs/0/failures", "/api/runs/0/failures?rank=test&min_count=1", "/api/runs/0/failures?rank=accuracy",
            "/api/runs/0/objects", "/api/runs/0/environments", "/api/runs/0/complexity", "/api/runs/0/surface",
            "/api/compare?a=0&b=0&param=model", "/api/reports", "/", "/m/0/x"]
    urls += [f"/api/runs/0/heatmap?x={p}" for p in names]
    urls += [f"/api/runs/0/select?filter={p}:0" for p in names]
    urls += [f"/api/compare?a=0&b=0&param={p}" for p in names]
    from urllib.parse import quote
    for i in ids:
        urls.append(f"/api/runs/0/rows/{quote(str(i), safe='')}")
        for name in ("rgb", "mask", "uv"):
            urls.append(f"/api/runs/0/images/{quote(str(i), safe='')}/{name}")
    return urls


def check_all(c: TestClient, ids: list) -> dict[str, int]:
    codes = {}
    for url in endpoints(c, ids):
        r = c.get(url)
        codes[url] = r.status_code
        assert r.status_code < 500, (url, r.text[:300])
        if r.headers["content-type"].startswith("application/json"):
            strict_json(r.text)
    return codes


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    run_dir = make_run(tmp_path_factory.mktemp("hostile") / "run", 24)
    return run_dir


def test_no_log_line_takes_a_view_down(tmp_path):
    run_dir = make_run(tmp_path / "run", 24)
    good = [json.loads(line) for line in (run_dir / "details.log").read_text().splitlines()]
    c = client(run_dir)
    assert c.get("/api/runs").json()["runs"][0]["rows"] == 24
    # appended while the dashboard runs (the issue: every endpoint answered 500 until the file was replaced)
    append(run_dir, [line for line, _ in SKIPPED] + BAD_VALUES + ODD + [json.dumps(row("after-all"))])
    info = c.get("/api/runs").json()["runs"][0]
    kept = 24 + len(BAD_VALUES) + len(ODD) + 1
    assert info["rows"] == kept
    assert info["skipped"] == len(SKIPPED)
    reasons: dict[str, int] = {}
    for _, why in SKIPPED:
        reasons[why] = reasons.get(why, 0) + 1
    assert info["skipped_reasons"] == reasons
    # pred-inf, pred-nan, zoom-nan, zoom-inf, zoom-1e400, verdict-nan
    assert info["bad_values"] == len(BAD_VALUES)
    ids = [r["id"] for r in good] + [json.loads(line)["id"] for line in BAD_VALUES]
    ids += ["odd-boxes", "odd-error", "odd-nested-arg", "../../../../etc/passwd", "odd-prediction", "12345", "after-all"]
    codes = check_all(c, ids)
    assert codes["/api/runs/0/rows/after-all"] == 200 and codes["/api/runs/0/select?per_page=500"] == 200

    # the columns stay aligned: per-model and per-zoom counts equal those computed from the log directly
    heat = c.get("/api/runs/0/heatmap", params={"x": "model"}).json()
    kept_rows = good + [json.loads(line) for line in BAD_VALUES + ODD] + [row("after-all")]
    assert len(kept_rows) == kept
    for label, cell in zip(heat["x"]["labels"], heat["cells"][0]):
        sel = [r for r in kept_rows if r["model"] == label and r.get("status") == "ok"
               and r.get("is_correct") in (True, False)]
        assert cell["n"] == len(sel), label
    zoom = c.get("/api/runs/0/heatmap", params={"x": ZOOM}).json()
    assert zoom["x"]["labels"] == ["0.8", "1", "1.2"]   # NaN/Infinity/1e400 are missing, not bins
    finite = [r for r in kept_rows if r.get("status") == "ok" and r.get("is_correct") in (True, False)
              and math.isfinite((r.get("render_args") or {}).get("CameraControl.zoom", math.nan))]
    assert sum(cell["n"] for cell in zoom["cells"][0]) == len(finite)
    params = {p["name"]: p for p in c.get("/api/runs/0/params").json()["params"]}
    assert "render_args.model" in params and params["model"]["labels"].count("mug.glb") == 1
    # odd content served back: non-finite numbers as null, a too-deep value as a placeholder
    boxes = c.get("/api/runs/0/rows/odd-boxes").json()
    assert [b["score"] for b in boxes["item"]["boxes"]] == [0.9]
    assert boxes["row"]["boxes"][2][5] is None
    deep = c.get("/api/runs/0/rows/odd-error").json()
    assert "(nested too deep)" in json.dumps(deep["row"]["error"])
    pred = c.get("/api/runs/0/rows/pred-inf").json()
    assert pred["row"]["prediction"] == [None] and pred["item"]["predicted"] == []
    # the same log read from the start (the CLI opening it) gives the same counts
    again = Run(run_dir)
    assert (len(again), again.skipped, again.skipped_reasons, again.bad_values) == (
        kept, len(SKIPPED), reasons, len(BAD_VALUES))


def test_numbers_in_urls_are_4xx(hostile):
    c = client(hostile)
    big = "9" * 5000
    for url in [f"/api/runs/{big}/params", f"/api/runs/{big}/heatmap", f"/api/reports/{big}",
                f"/api/reports/0/files/{big}", "/api/runs/-1/params", "/api/runs/%C2%B2/params", "/api/runs/1e3/params"]:
        r = c.get(url)
        assert r.status_code == 404, url
        assert len(r.json()["error"]) < 400
    for url in [f"/api/runs/0/heatmap?fix=model:{big}", "/api/runs/0/heatmap?fix=model:%C2%B2",
                f"/api/runs/0/select?page={big}", f"/api/runs/0/failures?min_count={big}", f"/api/compare?a={big}",
                "/api/runs/0/failures?rank=bogus"]:
        r = c.get(url)
        assert r.status_code == 400, url
        assert "error" in r.json()
    assert c.get(f"/m/{big}/x").status_code == 200   # the phone page itself; its API calls answer 404


def secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    ok, png = cv2.imencode(".png", np.full((8, 8, 3), 7, np.uint8))
    secret.write_bytes(png.tobytes() + b"SECRET")
    return secret


def test_symlinks_out_of_the_run_and_special_files_are_refused(tmp_path):
    run_dir = make_run(tmp_path / "run", 8)
    ids = [json.loads(line)["id"] for line in (run_dir / "details.log").read_text().splitlines()]
    ok_ids = [i for i in ids if (run_dir / "images" / f"{i}_rgb.png").exists()]
    a, b, d, e, f = ok_ids[:5]
    images = run_dir / "images"
    secret = secret_file(tmp_path)
    (images / f"{a}_rgb.png").unlink()
    (images / f"{a}_rgb.png").symlink_to(secret)
    (images / f"{a}_mask.png").unlink()
    (images / f"{a}_mask.png").symlink_to("/etc/shadow" if Path("/etc/shadow").exists() else "/etc/passwd")
    (images / f"{b}_rgb.png").unlink()
    os.mkfifo(images / f"{b}_rgb.png")                    # would block a naive open
    (images / f"{d}_rgb.png").unlink()
    (images / f"{d}_rgb.png").symlink_to(images / f"{e}_rgb.png")   # inside the run: fine
    (images / f"{f}_uv.exr").unlink()
    (images / f"{f}_uv.exr").symlink_to(tmp_path / "outside")        # a directory
    c = client(run_dir)
    for url in [f"/api/runs/0/images/{a}/rgb", f"/api/runs/0/images/{a}/mask", f"/api/runs/0/images/{b}/rgb",
                f"/api/runs/0/images/{f}/uv"]:
        r = c.get(url)
        assert r.status_code == 403, url
        assert b"SECRET" not in r.content and "root:" not in r.text
    assert "resolves outside the run directory" in c.get(f"/api/runs/0/images/{a}/rgb").json()["error"]
    assert "not a regular file" in c.get(f"/api/runs/0/images/{b}/rgb").json()["error"]
    linked = c.get(f"/api/runs/0/images/{d}/rgb")
    assert linked.status_code == 200 and linked.content == (images / f"{e}_rgb.png").read_bytes()
    items = {i["id"]: i for i in c.get("/api/runs/0/select", params={"per_page": 500}).json()["items"]}
    assert "rgb" not in items[a]["passes"] and "mask" not in items[a]["passes"] and "rgb" not in items[b]["passes"]
    cx = c.get("/api/runs/0/complexity").json()
    assert {p["id"] for p in cx["points"]}.isdisjoint({a, b})
    assert cx["skipped"] == {files.OUTSIDE: 1, files.NOT_REGULAR: 1}   # counted, nothing decoded from outside
    assert c.get("/api/runs/0/surface").status_code == 200

    # the whole images/ folder a link to elsewhere: nothing of it is served
    outside = tmp_path / "elsewhere"
    images.rename(outside)
    images.symlink_to(outside)
    c = client(run_dir)
    assert c.get(f"/api/runs/0/images/{e}/rgb").status_code == 403
    assert all(not i["passes"] for i in c.get("/api/runs/0/select", params={"per_page": 500}).json()["items"])

    # companion exports: the same rule inside the export folder
    from threedb.companion.export import FORMAT, FORMAT_VERSION
    comp = run_dir / "companion"
    (comp / e).mkdir(parents=True)
    (comp / "manifest.json").write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "renders": {e: {}}}))
    (comp / e / "render.png").symlink_to(secret)
    (comp / e / "overlay.png").write_bytes(secret.read_bytes())
    r = c.get(f"/api/runs/0/companion/{e}/files/render")
    assert r.status_code == 403 and b"SECRET" not in r.content
    assert c.get(f"/api/runs/0/companion/{e}/files/overlay").status_code == 200


def png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of ``width x height`` black pixels, under a megabyte, built in milliseconds:
    deflate output after a full flush is byte-aligned and has no history, so one compressed band of
    rows repeats as is; the zlib trailer (Adler-32) of all-zero data is (length mod 65521) << 16 | 1."""
    band_rows = 100 if height % 100 == 0 else 1
    band = b"\0" * ((width + 1) * band_rows)
    c = zlib.compressobj(9)
    head = c.compress(band) + c.flush(zlib.Z_FULL_FLUSH)
    body = c.compress(band) + c.flush(zlib.Z_FULL_FLUSH)
    total = (width + 1) * height
    data = head + body * (height // band_rows - 1) + b"\x03\x00" + struct.pack(">I", (total % 65521) << 16 | 1)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return (files.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_png_bomb_helper_is_a_real_png():
    small = png_bomb(300, 200)
    image = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image.shape == (200, 300) and image.max() == 0
    big = png_bomb(30000, 30000)
    assert len(big) < 1_000_000 and files.image_size(big, "x.png") == (30000, 30000)


BOMB_SCRIPT = r"""
import json, resource, sys, time
from threedb.dashboard.loader import Run
from threedb.dashboard import analysis, imaging
run = Run(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
cx = imaging.complexity(analysis.snapshot(run))
print(json.dumps({"seconds": time.perf_counter() - t, "skipped": cx["skipped"], "points": len(cx["points"]),
                  "before_kb": before, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    run_dir = make_run(tmp_path / "run", 12)
    ids = [i for i in (json.loads(line)["id"] for line in (run_dir / "details.log").read_text().splitlines())
           if (run_dir / "images" / f"{i}_rgb.png").exists()]
    bomb = png_bomb(30000, 30000)
    for i in ids[:3]:
        (run_dir / "images" / f"{i}_rgb.png").write_bytes(bomb)
    (run_dir / "images" / f"{ids[3]}_mask.png").write_bytes(bomb)
    (run_dir / "images" / f"{ids[4]}_rgb.png").write_bytes(b"GIF89a not a png at all")
    out = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(run_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["skipped"] == {files.TOO_LARGE: 4, files.UNREADABLE: 1}
    assert result["points"] == len(ids) - 5
    # 30000 x 30000 decoded would be 900 MB (grey) per image; nothing near that is allocated
    assert result["peak_kb"] - result["before_kb"] < 100_000, result
    assert result["seconds"] < 10, result
    c = client(run_dir)
    r = c.get(f"/api/runs/0/images/{ids[0]}/rgb")
    assert r.status_code == 403 and "30000 x 30000 pixels" in r.json()["error"]
    assert c.get(f"/api/runs/0/images/{ids[5]}/rgb").status_code == 200


def test_pixel_cap_applies_to_uv_passes(hostile, monkeypatch):
    monkeypatch.setattr(files, "MAX_PIXELS", 32 * 32 - 1)   # the synthetic passes are 32 x 32
    c = client(hostile)
    job = next(i["id"] for i in c.get("/api/runs/0/select").json()["items"] if "uv" in i["passes"])
    r = c.get(f"/api/runs/0/images/{job}/uv")
    assert r.status_code == 403 and "32 x 32 pixels" in r.json()["error"]
    surface = c.get("/api/runs/0/surface", params={"model": "mug.glb"}).json()
    assert surface["rows"] == 0 and list(surface["skipped"]) == [files.TOO_LARGE]
    assert surface["skipped"][files.TOO_LARGE] == sum(
        1 for line in (hostile / "details.log").read_text().splitlines()
        if json.loads(line)["model"] == "mug.glb" and json.loads(line)["status"] == "ok")


def write_config(run_dir: Path, render_passes, extra_passes) -> None:
    config = yaml.safe_load((run_dir / "config.resolved.yaml").read_text()) or {}
    config["render"] = {"passes": render_passes}
    config["logging"] = {"extra_passes": extra_passes}
    (run_dir / "config.resolved.yaml").write_text(yaml.safe_dump(config))


def test_texts_say_what_is_missing(tmp_path):
    # uv rendered but not kept: it is logging.extra_passes that is missing
    run_dir = make_run(tmp_path / "kept-mask", 12)
    for uv in (run_dir / "images").glob("*_uv.exr"):
        uv.unlink()
    write_config(run_dir, ["depth", "mask", "uv"], ["mask"])
    surface = client(run_dir).get("/api/runs/0/surface").json()
    assert surface["rows"] == 0
    assert "uv was rendered (render.passes) but not kept" in surface["missing"]
    assert "logging.extra_passes" in surface["missing"]
    # not rendered at all: render.passes too
    write_config(run_dir, ["depth", "mask"], ["mask"])
    assert "did not render them. Add uv (and mask) to render.passes" in client(run_dir).get("/api/runs/0/surface").json()["missing"]

    # complexity: no masks logged -> the whole image, and it says so
    c = client(run_dir)
    assert c.get("/api/runs/0/complexity").json()["measure"] == "Canny edge density outside the object mask"
    masks = sorted((run_dir / "images").glob("*_mask.png"))
    masks[0].unlink()
    cx = client(run_dir).get("/api/runs/0/complexity").json()
    assert cx["masked"] == len(cx["points"]) - 1
    assert f"(1 of {len(cx['points'])} images without a mask: whole image)" in cx["measure"]
    for m in masks[1:]:
        m.unlink()
    cx = client(run_dir).get("/api/runs/0/complexity").json()
    assert cx["masked"] == 0 and "over the whole image (no object masks logged" in cx["measure"]
    assert "outside the object mask" not in cx["measure"]


def test_cli_opens_a_hostile_log_and_says_what_it_left_out(tmp_path, capsys):
    from threedb.dashboard.cli import open_runs

    run_dir = make_run(tmp_path / "run", 6, with_images=False)
    append(run_dir, [SKIPPED[0][0], SKIPPED[2][0], BAD_VALUES[0]])
    run = open_runs([str(run_dir)])[0]
    assert len(run) == 7
    err = capsys.readouterr().err
    assert "skipped 2 corrupt line(s) (1 nested too deep, 1 not JSON)" in err
    assert "1 row(s) with NaN/Infinity values (treated as missing)" in err
