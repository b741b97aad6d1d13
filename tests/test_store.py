"""The results store: threedboard-compatible details.log, durable appends, resume after a crash."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import yaml

from threedb.sim.render.files import read_exr
from threedb.sim.store import ResultsError, RunStore, read_rows, render_args

CLASSES = ["cat", "dog", "mug"]
OUTPUTS = ("is_correct", "loss", "prediction")


def job(i: int, **values) -> dict:
    return {
        "id": f"{i:05d}", "seed": 1000 + i,
        "object": {"uid": "mug", "path": "/assets/objects/mug/mug.glb", "format": "glb"},
        "environment": {"name": "city", "path": "/assets/env/city.hdr", "kind": "hdri"},
        "controls": [
            {"name": "orientation", "ref": "threedb.controls.scene.orientation:OrientationControl",
             "where": "controls[0]", "values": {"rotation_x": float(i), "rotation_y": np.float32(0.5)}},
            {"name": "blur", "ref": "my_controls.py:BlurControl", "where": "controls[1]",
             "values": {"sigma": 2, "fixed_kernel": 5, **values}},
        ],
    }


def outputs(i: int) -> dict:
    return {"is_correct": np.bool_(i % 2 == 0), "loss": np.float32(0.25 * i),
            "prediction": np.array([i % 3, (i + 1) % 3])}


def rgb(i: int) -> np.ndarray:
    return np.full((8, 8, 3), i, dtype=np.uint8)


def store(run_dir, **kw) -> RunStore:
    args = dict(output_keys=OUTPUTS, output_type="classes", class_names=CLASSES)
    return RunStore(run_dir, **{**args, **kw})


def resume(run_dir, **kw) -> RunStore:
    args = dict(output_keys=OUTPUTS, output_type="classes", class_names=CLASSES)
    return RunStore.open(run_dir, **{**args, **kw})


def lines(run_dir) -> list[str]:
    return (run_dir / "details.log").read_text().splitlines()


def test_rows_have_identical_key_order_and_threedboard_values(tmp_path):
    with store(tmp_path, config={"seed": 3, "controls": [{"type": "orientation"}]}, seed=3) as s:
        for i in range(6):
            assert s.write(job(i), outputs(i), rgb=rgb(i))
    rows = [json.loads(line) for line in lines(tmp_path)]
    assert len(rows) == 6
    assert list(rows[0]) == ["is_correct", "loss", "prediction", "id", "environment", "model",
                             "render_args", "output_type", "status", "error", "seed", "object_uid",
                             "controls_report"]
    assert all(list(r) == list(rows[0]) and list(r["render_args"]) == list(rows[0]["render_args"])
               for r in rows)
    r = rows[3]
    assert r["is_correct"] is False and r["loss"] == 0.75 and r["prediction"] == [0, 1]
    assert (r["id"], r["environment"], r["model"], r["output_type"], r["status"]) == (
        "00003", "city.hdr", "mug.glb", "classes", "ok")
    assert r["render_args"] == {"OrientationControl.rotation_x": 3.0, "OrientationControl.rotation_y": 0.5,
                                "BlurControl.sigma": 2, "BlurControl.fixed_kernel": 5}
    assert json.loads((tmp_path / "class_maps.json").read_text()) == CLASSES
    assert yaml.safe_load((tmp_path / "config.resolved.yaml").read_text())["seed"] == 3
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["versions"]["python"] and manifest["started"]


def test_images_named_by_id_written_atomically_and_extra_passes(tmp_path):
    with store(tmp_path, extra_passes=("depth", "mask")) as s:
        depth = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
        s.write(job(1), outputs(1), rgb=rgb(7),
                passes={"depth": depth, "mask": np.eye(8, dtype=bool), "uv": np.zeros((8, 8, 2), np.float32)})
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == ["00001_depth.exr", "00001_mask.png", "00001_rgb.png"]  # no temp files left, uv not kept
    import cv2
    assert (cv2.imread(str(tmp_path / "images" / "00001_rgb.png")) == 7).all()
    assert np.array_equal(read_exr(tmp_path / "images" / "00001_depth.exr")["Y"], depth)


def test_duplicate_id_is_dropped(tmp_path):
    with store(tmp_path) as s:
        assert s.write(job(1), outputs(1), rgb=None)
        assert not s.write(job(1), outputs(2), rgb=None)
    assert len(lines(tmp_path)) == 1


def test_resume_after_crash_mid_line(tmp_path, caplog):
    with store(tmp_path) as s:
        for i in range(4):
            s.write(job(i), outputs(i), rgb=None)
    path = tmp_path / "details.log"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # the 4th line cut in the middle of its JSON
    with caplog.at_level(logging.WARNING, logger="threedb.sim.store"):
        s = resume(tmp_path)
    assert s.done_ids() == {"00000", "00001", "00002"}
    assert "cut short" in caplog.text
    assert s.write(job(3), outputs(3), rgb=None) and s.write(job(4), outputs(4), rgb=None)
    assert not s.write(job(0), outputs(0), rgb=None)
    s.close()
    assert [r["id"] for r in read_rows(tmp_path)] == ["00000", "00001", "00002", "00003", "00004"]
    assert all(json.loads(line) for line in lines(tmp_path))
    assert len(json.loads((tmp_path / "manifest.json").read_text())["resumes"]) == 1


def test_resume_keeps_a_complete_last_line_without_newline_and_refuses_real_corruption(tmp_path):
    with store(tmp_path) as s:
        for i in range(3):
            s.write(job(i), outputs(i), rgb=None)
    path = tmp_path / "details.log"
    path.write_bytes(path.read_bytes()[:-1])
    with resume(tmp_path) as s:
        assert len(s.done_ids()) == 3
        s.write(job(3), outputs(3), rgb=None)
    assert len(list(read_rows(tmp_path))) == 4
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], "{broken", *text[1:]]) + "\n")
    with pytest.raises(ResultsError, match=":2: unreadable"):
        resume(tmp_path)


def test_new_store_refuses_existing_results_and_resume_checks_the_run(tmp_path):
    with store(tmp_path, config={"a": 1}) as s:
        s.write(job(0), outputs(0), rgb=None)
    with pytest.raises(ResultsError, match="threedb run CONFIG --out DIR --resume"):
        store(tmp_path)
    with pytest.raises(ResultsError, match="class names"):
        resume(tmp_path, class_names=["x"])
    with pytest.raises(ResultsError, match="another configuration"):
        resume(tmp_path, config={"a": 2})
    with pytest.raises(ResultsError, match="keys"):
        resume(tmp_path, output_keys=("is_correct", "loss"))
    resume(tmp_path, config={"a": 1}).close()


def test_rows_with_other_keys_are_refused(tmp_path):
    with store(tmp_path) as s:
        s.write(job(0), outputs(0), rgb=None)
        with pytest.raises(ValueError, match="keys differ"):
            s.write(job(1, extra_param=1), outputs(1), rgb=None)
        with pytest.raises(ValueError, match="lack"):
            s.write(job(2), {"is_correct": True}, rgb=None)
    assert len(lines(tmp_path)) == 1


def test_failures_only_image_logging_and_failed_rows(tmp_path):
    with store(tmp_path, log_images="failures") as s:
        for i in range(4):
            s.write(job(i), outputs(i), rgb=rgb(i))    # odd ids are misclassified
        s.write_failure(job(4), "RenderError: Blender crashed")
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["00001_rgb.png", "00003_rgb.png"]
    rows = list(read_rows(tmp_path))
    failed = rows[-1]
    assert list(failed) == list(rows[0])
    assert failed["status"] == "failed" and failed["error"] == "RenderError: Blender crashed"
    assert failed["is_correct"] is None and failed["loss"] is None and failed["prediction"] == []
    with resume(tmp_path, log_images="none") as s:
        assert s.failed_ids() == {"00004"} and len(s.done_ids()) == 5
        s.write(job(5), outputs(5), rgb=rgb(5))
    assert not (tmp_path / "images" / "00005_rgb.png").exists()


def test_non_finite_loss_is_null_and_two_instances_of_a_class_are_disambiguated(tmp_path):
    controls = [{"name": "near", "ref": "m:CameraControl", "values": {"zoom": 1}},
                {"name": "far", "ref": "m:CameraControl", "values": {"zoom": 2}},
                {"name": "custom", "ref": "plugin_module", "values": {"k": (1, 2)}}]
    assert render_args(controls) == {"CameraControl[near].zoom": 1, "CameraControl[far].zoom": 2,
                                     "custom.k": [1, 2]}
    with store(tmp_path) as s:
        s.write(job(0), {**outputs(0), "loss": float("inf")}, rgb=None)
    assert json.loads(lines(tmp_path)[0])["loss"] is None


def test_threedboard_reads_the_run_dir(tmp_path):
    data_reader = pytest.importorskip("threedboard.data_reader")
    with store(tmp_path) as s:
        for i in range(5):
            s.write(job(i), outputs(i), rgb=rgb(i))
        s.write_failure(job(5), "boom")
    reader = data_reader.DataReader(str(tmp_path))
    reader.update_data()
    answer = json.loads(reader.answer, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    params = answer["parameters"]
    assert params[:3] == list(OUTPUTS) and "render_args" not in params
    assert {"render_args.OrientationControl.rotation_x", "render_args.BlurControl.sigma",
            "id", "environment", "model", "output_type", "status"} <= set(params)
    assert len(answer["data"]) == 6 and answer["class_map"] == CLASSES
    col = {p: i for i, p in enumerate(params)}
    assert [row[col["is_correct"]] for row in answer["data"]] == [True, False, True, False, True, None]
    assert all(isinstance(row[col["prediction"]], list) for row in answer["data"])  # UI reads prediction[0]
    for row in answer["data"][:5]:  # threedboard serves /images/<id> as images/<id>_rgb.png
        assert (tmp_path / "images" / f"{row[col['id']]}_rgb.png").is_file()
    # a live reader picks up appended rows
    with resume(tmp_path) as s:
        s.write(job(6), outputs(6), rgb=None)
    reader.update_data()
    assert len(json.loads(reader.answer)["data"]) == 7
