"""Detection and segmentation through `threedb run`: real Blender renders (64 px, 2 samples), real
sockets, real model inference (the tiny models of run_task_models.py). Every logged metric is
recomputed here from the rendered mask kept beside the image (logging.extra_passes)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from run_cli import start_run
from test_run import finish, rows

REPO = Path(__file__).resolve().parents[1]
RENDER = 64
OBJECTS = ("mug", "duck")
N_PER_OBJECT = 3


def write_config(tmp: Path, cls: str, resolution: list[int], evaluation: dict) -> Path:
    config = {
        "seed": 0,
        "assets": {"root": "default", "objects": list(OBJECTS), "environments": ["city"]},
        "render": {"resolution": RENDER, "samples": 2, "passes": ["mask"], "threads": 1},
        "controls": [{"type": "orientation", "rotation_z": [-3.0, 3.0]}],
        "policy": {"type": "grid", "samples_per_dim": N_PER_OBJECT},
        "inference": {"file": str(REPO / "tests" / "run_task_models.py"), "class": cls,
                      "resolution": resolution, "device": "cpu", "batch_size": 4},
        "evaluation": evaluation,
        "logging": {"extra_passes": ["mask"]},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(tmp: Path, config: Path) -> tuple[dict, list[dict]]:
    out = tmp / "run"
    result = finish(start_run(config, out, "--render-workers", "1", "--evaluators", "1"))
    got = rows(out)
    assert sorted(r["id"] for r in got) == sorted(f"city-{o}-p{i:06d}" for o in OBJECTS for i in range(N_PER_OBJECT))
    assert result["failed"] == 0 and all(r["status"] == "ok" for r in got)
    return result, got


def mask_of(tmp: Path, job_id: str) -> np.ndarray:
    mask = np.asarray(Image.open(tmp / "run" / "images" / f"{job_id}_mask.png")) > 127
    assert mask.shape == (RENDER, RENDER)
    return mask


def box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def test_detection_boxes_normalised_by_the_model_resolution(tmp_path):
    (tmp_path / "map.json").write_text(json.dumps({"mug": 0, "duck": 1}))
    # the model sees 32 x 48 (h x w) images of the 64 x 64 renders: boxes come back in those pixels
    config = write_config(tmp_path, "FixedBoxDetector", [32, 48],
                          {"type": "detection", "args": {"classmap_path": "map.json", "max_num_boxes": 4}})
    _, got = run(tmp_path, config)
    centre, full = [0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]
    for r in got:
        assert r["output_type"] == "bboxes"
        boxes = np.asarray(r["boxes"])
        assert boxes.shape == (4, 6)
        # normalised by the 48 x 32 input, not the 64 x 64 render; the 0.1-score box is dropped
        assert boxes[0] == pytest.approx(centre + [0.9, 0]) and boxes[1] == pytest.approx(full + [0.6, 1])
        assert (boxes[2:] == -1).all()
        assert ((boxes[:2, :4] >= 0) & (boxes[:2, :4] <= 1)).all()
        # the target: the tight box of the object's mask, in pixel edges, normalised by the render size
        mask = mask_of(tmp_path, r["id"])
        ys, xs = np.nonzero(mask)
        assert len(xs), "the object is in view"
        target = [xs.min() / RENDER, ys.min() / RENDER, (xs.max() + 1) / RENDER, (ys.max() + 1) / RENDER]
        ious = [box_iou(centre, target), box_iou(full, target)]
        assert r["iou"] == pytest.approx(max(ious), abs=1e-5)
        wanted = 0 if r["object_uid"] == "mug" else 1           # the class map's label
        hit_any = bool(max(ious) >= 0.5)
        hit_label = bool(ious[wanted] >= 0.5)                         # box i carries label i
        assert r["is_correct"] is hit_label
        assert (r["precision_nolabel"], r["recall_nolabel"]) == pytest.approx((hit_any / 2, float(hit_any)))
        assert (r["precision"], r["recall"]) == pytest.approx((hit_label / 2, float(hit_label)))


def test_segmentation_per_class_iou(tmp_path):
    (tmp_path / "map.json").write_text(json.dumps({"mug": 1, "duck": 2}))
    config = write_config(tmp_path, "HalfSegmenter", [32, 32],
                          {"type": "segmentation", "args": {"classmap_path": "map.json"}})
    result, got = run(tmp_path, config)
    left = np.zeros((RENDER, RENDER), dtype=bool)
    left[:, : RENDER // 2] = True          # the model's class-1 half, upsampled from 32 to 64 px

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        union = (a | b).sum()
        return float((a & b).sum() / union) if union else 1.0

    for r in got:
        mask = mask_of(tmp_path, r["id"])
        obj_class = 1 if r["object_uid"] == "mug" else 2
        pred_class = np.where(left, 1, 0)
        iou_class = iou(pred_class == obj_class, mask)
        iou_bg = iou(~left, ~mask)
        on_object = [int((pred_class[mask] == c).sum()) for c in (0, 1)]
        expected = {
            "iou": iou(left, mask), "iou_class": iou_class, "iou_background": iou_bg,
            "mean_iou": (iou_class + iou_bg) / 2,
            "pixel_accuracy": float((pred_class == np.where(mask, obj_class, 0)).mean()),
        }
        assert {k: r[k] for k in expected} == pytest.approx(expected, abs=1e-5)
        assert r["prediction"] == [int(np.argmax(on_object))]
        assert r["is_correct"] is bool(iou_class >= 0.5)
        if obj_class == 2:
            assert r["iou_class"] == 0.0 and r["iou"] > 0      # found as foreground, wrong class
    assert result["summary"]["overall"]["accuracy"] == pytest.approx(np.mean([r["is_correct"] for r in got]))
