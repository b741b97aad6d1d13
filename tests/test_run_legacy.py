"""The original 3DB heat-map config (configs/legacy_3db_example.yaml, as the paper's) through
`threedb run`, with bundled assets and the tiny CNN put in with --set; its run directory then read
by threedboard 0.0.8's own reader (what `python -m threedboard RUN_DIR -n` serves)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from run_cli import start_run
from test_run import finish, rows, write_config

REPO = Path(__file__).resolve().parents[1]
OBJECTS = ("mug", "duck")


def test_legacy_heatmap_config_runs_and_threedboard_reads_it(tmp_path):
    write_config(tmp_path)  # the tiny model's weights, label map and class map (its config is not used)
    overrides = {
        # the original asks for downloaded ImageNet weights: the tiny CNN instead
        "inference.module": "null", "inference.args": "null",
        "inference.file": str(REPO / "tests" / "tiny_net.py"), "inference.class": "TinyNet",
        "inference.weights": str(tmp_path / "tiny.pt"), "inference.label_map": str(tmp_path / "classes.json"),
        "inference.resolution": "[32, 32]", "inference.device": "cpu",
        "evaluation.args.classmap_path": str(tmp_path / "map.json"),
        "assets.objects": f"[{', '.join(OBJECTS)}]", "assets.environments": "[city]",
        "render.resolution": "32", "render.samples": "1",
        "policy.samples_per_dim": "2",          # 2 x 2 grid over rotation_z x view_point_z
    }
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    result = finish(start_run(REPO / "configs" / "legacy_3db_example.yaml", out, *sets))
    got = rows(out)
    ids = [r["id"] for r in got]
    assert sorted(ids) == sorted(f"city-{o}-p{i:06d}" for o in OBJECTS for i in range(4))
    assert len(set(ids)) == len(ids) == result["done"] == 8 and result["failed"] == 0
    # the heat map's two axes, each at its grid's two ends
    rot = sorted({r["render_args"]["OrientationControl.rotation_z"] for r in got})
    height = sorted({r["render_args"]["CameraControl.view_point_z"] for r in got})
    assert rot == pytest.approx([-3.14, 2.93]) and height == pytest.approx([0.0, 1.0])
    assert result["summary"]["overall"]["jobs"] == 8

    data_reader = pytest.importorskip("threedboard.data_reader")
    reader = data_reader.DataReader(str(out))
    reader.update_data()
    answer = json.loads(reader.answer, parse_constant=lambda c: pytest.fail(f"{c} in threedboard's JSON"))
    assert len(answer["data"]) == 8
    assert answer["class_map"] == ["mug", "duck", "other"]
    col = {p: i for i, p in enumerate(answer["parameters"])}
    assert {"render_args.OrientationControl.rotation_z", "render_args.CameraControl.view_point_z",
            "is_correct", "prediction", "id", "model", "environment"} <= set(col)
    for row in answer["data"]:
        assert row[col["is_correct"]] in (True, False) and isinstance(row[col["prediction"]], list)
        assert (out / "images" / f"{row[col['id']]}_rgb.png").is_file()  # what it serves at /images/<id>
    accuracy = sum(row[col["is_correct"]] for row in answer["data"]) / 8
    assert math.isclose(accuracy, result["summary"]["overall"]["accuracy"])
