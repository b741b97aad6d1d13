"""The run summary (accuracy per object / environment / model, parameter bins, worst regions) and the
progress display, on a synthetic details.log written with the real RunStore."""
from __future__ import annotations

import io
import json

import pytest

from threedb.sim.run.progress import Progress, format_summary, summarize
from threedb.sim.store import RunStore

ROT = "OrientationControl.rotation_z"
ZOOM = "CameraControl.zoom_factor"
KIND = "BlurControl.kind"
FLAG = "BlurControl.on"

# rotation_z values per equal-width bin of [-3, 3] (edges -3, -1.8, -0.6, 0.6, 1.8, 3) and how
# many of them are classified correctly (the first ones of each list)
BINS = [
    ([-3.0, -2.5, -2.0, -1.9, -2.8, -2.1], 1),
    ([-1.5, -1.0, -0.7, -1.2, -0.9], 3),
    ([0.0, 0.5, -0.5, 0.2], 0),          # 4 evaluated rows: below the minimum count
    ([1.0, 1.5, 0.7, 1.7, 1.1], 5),
    ([2.0, 3.0, 2.5, 2.9, 2.2], 4),
]
FAILED_ROT = [0.1, -2.6]                 # two failed renders (bins 2 and 0)


def make_rows() -> list[dict]:
    """(values, is_correct) of every evaluated row, in writing order."""
    rows = []
    for values, n_correct in BINS:
        for j, value in enumerate(values):
            rows.append({"rot": value, "correct": j < n_correct})
    for i, r in enumerate(rows):
        r["zoom"] = 0.5 if i % 2 == 0 else 1.0
        r["kind"] = "box" if i < 10 else "gauss"
        r["on"] = i % 3 == 0
        r["obj"] = "mug" if i % 4 else "duck"
        r["env"] = "city" if i < 15 else "forest"
    return rows


def job(i: int, r: dict) -> dict:
    return {
        "id": f"j{i:03d}", "seed": i,
        "object": {"uid": r["obj"], "path": f"/assets/objects/{r['obj']}/{r['obj']}.glb", "format": "glb"},
        "environment": {"name": r["env"], "path": f"/assets/env/{r['env']}.exr", "kind": "hdri"},
        "controls": [
            {"name": "orientation", "ref": "threedb.controls.scene.orientation:OrientationControl",
             "values": {"rotation_z": r["rot"]}},
            {"name": "camera", "ref": "threedb.controls.scene.camera:CameraControl",
             "values": {"zoom_factor": r["zoom"], "aperture": 8.0}},
            {"name": "blur", "ref": "plugins.py:BlurControl", "values": {"kind": r["kind"], "on": r["on"]}},
        ],
    }


@pytest.fixture()
def run_dir(tmp_path):
    rows = make_rows()
    with RunStore(tmp_path, output_keys=("is_correct", "prediction"), output_type="classes",
                  class_names=["mug", "duck"]) as store:
        for i, r in enumerate(rows):
            store.write(job(i, r), {"is_correct": r["correct"], "prediction": [0]}, rgb=None)
        for k, rot in enumerate(FAILED_ROT):
            r = {"rot": rot, "zoom": 0.5, "kind": "box", "on": False, "obj": "mug", "env": "city"}
            store.write_failure(job(100 + k, r), "Blender crashed")
    return tmp_path, rows


def acc(rows: list[dict]) -> float:
    return sum(r["correct"] for r in rows) / len(rows)


def test_overall_and_groups(run_dir):
    path, rows = run_dir
    s = summarize(path)
    json.dumps(s, allow_nan=False)  # printed as JSON at the end of `threedb run`
    n = len(rows) + len(FAILED_ROT)
    assert s["overall"] == {"jobs": n, "failed": 2, "accuracy": pytest.approx(acc(rows))}
    for key, field, fmt in (("objects", "obj", "{}"), ("environments", "env", "{}.exr"), ("models", "obj", "{}.glb")):
        names = sorted({r[field] for r in rows})
        assert list(s[key]) == [fmt.format(v) for v in names]
        for v in names:
            mine = [r for r in rows if r[field] == v]
            failed = 2 if v in ("mug", "city") else 0
            assert s[key][fmt.format(v)] == {"jobs": len(mine) + failed, "failed": failed,
                                             "accuracy": pytest.approx(acc(mine))}


def test_numeric_parameter_is_cut_into_five_equal_bins(run_dir):
    path, _ = run_dir
    bins = summarize(path)["parameters"][ROT]
    assert len(bins) == 5
    edges = [-3.0, -1.8, -0.6, 0.6, 1.8, 3.0]
    for i, (b, (values, n_correct)) in enumerate(zip(bins, BINS)):
        assert (b["low"], b["high"]) == (pytest.approx(edges[i]), pytest.approx(edges[i + 1]))
        failed = sum(1 for v in FAILED_ROT if edges[i] <= v < edges[i + 1])
        assert (b["evaluated"], b["correct"], b["failed"], b["jobs"]) == (
            len(values), n_correct, failed, len(values) + failed)
        assert b["accuracy"] == pytest.approx(n_correct / len(values))
    assert bins[0]["bin"] == "[-3, -1.8)" and bins[-1]["bin"] == "[1.8, 3]"


def test_few_values_and_categories_get_one_bin_each(run_dir):
    path, rows = run_dir
    params = summarize(path)["parameters"]
    zoom = params[ZOOM]
    assert [b["value"] for b in zoom] == [0.5, 1.0] and all(b["low"] is None for b in zoom)
    for b in zoom:
        mine = [r for r in rows if r["zoom"] == b["value"]]
        assert (b["evaluated"], b["correct"]) == (len(mine), sum(r["correct"] for r in mine))
    assert [b["bin"] for b in params[KIND]] == ["box", "gauss"]
    assert [b["bin"] for b in params[FLAG]] == ["false", "true"]   # booleans are categories
    flag_true = [r for r in rows if r["on"]]
    assert params[FLAG][1]["accuracy"] == pytest.approx(acc(flag_true))


def test_worst_regions_ranked_with_minimum_count(run_dir):
    path, rows = run_dir
    s = summarize(path)
    # every bin with >= 5 evaluated rows, computed here by hand, lowest accuracy first
    candidates = [(n_correct / len(values), ROT, i) for i, (values, n_correct) in enumerate(BINS) if len(values) >= 5]
    for name, field, values in ((ZOOM, "zoom", [0.5, 1.0]), (KIND, "kind", ["box", "gauss"]),
                                (FLAG, "on", [False, True])):
        for i, v in enumerate(values):
            mine = [r for r in rows if r[field] == v]
            if len(mine) >= 5:
                candidates.append((acc(mine), name, i))
    candidates.sort(key=lambda t: t[0])
    worst = s["worst_regions"]
    assert len(worst) == 5
    assert [w["accuracy"] for w in worst] == pytest.approx([c[0] for c in candidates[:5]])
    assert (worst[0]["parameter"], worst[0]["bin"], worst[0]["correct"], worst[0]["evaluated"]) == (ROT, "[-3, -1.8)", 1, 6)
    assert all(w["evaluated"] >= 5 for w in worst)
    assert s["parameters"]["CameraControl.aperture"][0]["evaluated"] == 25
    assert not any(w["parameter"] == "CameraControl.aperture" for w in worst)   # fixed: says nothing
    assert not any(w["parameter"] == ROT and w["low"] == pytest.approx(-0.6) for w in worst)  # 4 rows only
    # a lower minimum count lets the 0 % bin in, first
    loose = summarize(path, min_count=4)["worst_regions"]
    assert (loose[0]["parameter"], loose[0]["accuracy"], loose[0]["evaluated"]) == (ROT, 0.0, 4)
    text = format_summary(s)
    assert "worst parameter regions" in text and "per object:" in text
    assert s["one_model_per_object"] and "per model:" not in text   # it would repeat "per object"
    assert f"1. {ROT} in [-3, -1.8): accuracy 16.7% (1/6 correct, 1 failed)" in text


def test_render_only_rows_are_unscored(tmp_path):
    with RunStore(tmp_path, output_keys=(), output_type="classes", class_names=["mug"]) as store:
        for i in range(3):
            store.write(job(i, {"rot": float(i), "zoom": 1.0, "kind": "box", "on": True, "obj": "mug",
                                "env": "city"}), {}, rgb=None)
    s = summarize(tmp_path)
    assert s["overall"] == {"jobs": 3, "failed": 0, "accuracy": None}
    assert s["worst_regions"] == []
    assert "none: no bin has enough evaluated jobs" in format_summary(s)


def test_per_model_lines_when_an_object_has_two_model_files(tmp_path):
    with RunStore(tmp_path, output_keys=("is_correct",), output_type="classes", class_names=["mug"]) as store:
        for i in range(4):
            j = job(i, {"rot": 0.0, "zoom": 1.0, "kind": "box", "on": True, "obj": "mug", "env": "city"})
            j["object"]["path"] = f"/assets/objects/mug/mug_v{i % 2}.glb"
            store.write(j, {"is_correct": i < 3}, rgb=None)
    s = summarize(tmp_path)
    assert not s["one_model_per_object"]
    assert s["models"]["mug_v0.glb"] == {"jobs": 2, "failed": 0, "accuracy": 1.0}
    assert s["models"]["mug_v1.glb"] == {"jobs": 2, "failed": 0, "accuracy": 0.5}
    text = format_summary(s)
    assert "per model:" in text and "mug_v1.glb" in text


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_off_a_terminal():
    stream = io.StringIO()
    p = Progress(10, already=2, stream=stream, every_s=3600, held=lambda: 7)
    p.rendered()
    p.update(ok=True)
    p.update(ok=False)
    p.tick()            # the first tick prints, later ones wait every_s
    p.tick()
    p.tick(force=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("[threedb run] 4/10 jobs,") and "1 failed, 7 awaiting evaluation" in lines[-1]


def test_progress_bar_on_a_terminal():
    stream = FakeTTY()
    p = Progress(10, already=2, stream=stream)
    for ok in (True, True, False):
        p.rendered()
        p.update(ok=ok)
    p.tick(force=True)
    out = stream.getvalue()
    assert "\r" in out and "threedb run" in out and "5/10" in out and "1 failed" in out
    p.update(ok=True)   # after the final tick: counted, nothing drawn
    p.tick(force=True)
    assert stream.getvalue() == out and p.ok == 3


def test_non_finite_numbers_are_categories_and_missing_values_in_no_bin():
    from threedb.sim.binning import bin_values

    b = bin_values("x", [1.0, float("inf"), 2.0, None], max_distinct=5)
    assert b.kind == "categorical" and b.codes.tolist()[-1] == -1 and len(b.labels) == 3
    many = bin_values("x", [float(i) for i in range(12)] + [None], max_distinct=5)
    assert many.kind == "numeric" and len(many.labels) == 5 and many.codes.tolist()[-1] == -1
    assert many.codes.tolist()[:12] == [min(int(i / (11 / 5)), 4) for i in range(12)]
