"""``threedb bg-variants``: end to end through the real CLI on the embedded default config (real model
inference on the shipped held-out renders with exact masks), the variants' defining properties checked
pixel-exactly on the written files, the report against its rows, and one clear error per bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from threedb.evaluators.datasets import ImageDataset
from threedb.robustness.backgrounds import CATEGORIES, VARIANTS, accuracies, bg_gap

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "assets" / "datasets" / "quickstart_heldout"
CARD = ROOT / "assets" / "models" / "quickstart" / "card.json"


def threedb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "threedb.sim.cli", "bg-variants", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bgv") / "out"
    proc = threedb("--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _source_masks() -> dict[str, np.ndarray]:
    ds = ImageDataset(HELDOUT)
    return {r.id: np.array(Image.open(r.passes["mask"])) > 0 for r in ds.records}


def _source_images() -> dict[str, np.ndarray]:
    return {r.id: np.array(Image.open(r.file).convert("RGB")) for r in ImageDataset(HELDOUT).records}


def test_outputs_are_image_datasets_with_a_manifest(default_run):
    out, _ = default_run
    report = json.loads((out / "report.json").read_text())
    assert report["job"] == "bg-variants" and report["variants"]["foreground_method"] == "mask"
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for variant in VARIANTS:
        ds = ImageDataset(out / "variants" / variant)
        assert len(ds) == report["variants"]["sizes"][variant] == 110     # 10 per class, paired
        assert ds.classes == ImageDataset(HELDOUT).classes
        image, label, target = ds[0]
        assert image.shape == (3, 64, 64) and isinstance(label, int)
        rows = [r for r in manifest if r["variant"] == variant]
        assert len(rows) == len(ds) and all((out / r["file"]).is_file() for r in rows)
    mixed = [r for r in manifest if r["variant"].startswith("MIXED")]
    assert all(r["background_id"] != r["source_id"] for r in mixed)
    assert all(r["background_label"] == r["label"] for r in mixed if r["variant"] == "MIXED-SAME")
    assert all(r["background_label"] == (r["label"] + 1) % 11 for r in mixed if r["variant"] == "MIXED-NEXT")
    for plot in report["plots"] + report["images"]:
        assert (out / plot["png"]).stat().st_size > 0 and (out / plot["svg"]).stat().st_size > 0


def test_variant_properties_hold_pixel_exactly_on_written_files(default_run):
    out, _ = default_run
    masks, sources = _source_masks(), _source_images()
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    checked = {v: 0 for v in VARIANTS}
    for row in manifest:
        image = np.array(Image.open(out / row["file"]).convert("RGB"))
        mask, source = masks[row["source_id"]], sources[row["source_id"]]
        variant = row["variant"]
        if variant == "ORIGINAL":
            assert np.array_equal(image, source)
        elif variant == "ONLY-FG":
            assert not image[~mask].any()
            assert np.array_equal(image[mask], source[mask])
        elif variant == "NO-FG":
            assert not image[mask].any()
            assert np.array_equal(image[~mask], source[~mask])
        elif variant.startswith("MIXED"):
            assert np.array_equal(image[mask], source[mask])
            assert not np.array_equal(image, source)          # the background was replaced
        elif variant == "ONLY-BG-T":
            ys, xs = np.nonzero(mask)
            box = image[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            # no foreground pixel is left: every pixel of the box is a tile of pixels outside it
            outside = np.ones(mask.shape, bool)
            outside[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = False
            colours = {tuple(p) for p in source[outside]}
            assert all(tuple(p) in colours for p in box.reshape(-1, 3))
            assert np.array_equal(image[outside], source[outside])
        elif variant == "ONLY-BG-B":
            ys, xs = np.nonzero(mask)
            assert not image[ys.min():ys.max() + 1, xs.min():xs.max() + 1].any()
        checked[variant] += 1
    assert all(n == 110 for n in checked.values())


def test_report_numbers_match_the_rows(default_run):
    out, proc = default_run
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 110 and {r["model"] for r in rows} == {"model"}
    labels = {r["id"]: r["label"] for r in rows}
    predictions = {v: {r["id"]: r["predictions"][v] for r in rows} for v in VARIANTS}
    acc = accuracies(predictions, labels)
    scores = report["models"]["model"]
    assert scores["accuracy"] == pytest.approx(acc)
    assert scores["bg_gap"] == pytest.approx(bg_gap(acc)) == pytest.approx(report["headline"]["BG-GAP"])
    assert scores["accuracy"]["ORIGINAL"] > 0.5 > scores["accuracy"]["ONLY-BG-T"]   # the model sees the object
    counts = {c: sum(r["category"] == c for r in rows) for c in CATEGORIES}
    assert scores["categories"] == counts and sum(counts.values()) == 110
    adv = scores["adversarial"]
    assert adv["foregrounds"] == 110 and adv["evaluations"] == 110 * 20            # budget 20
    rates = [r for r in adv["success_rate"].values() if r is not None]
    assert [b["success_rate"] for b in adv["most_adversarial"]] == sorted(rates, reverse=True)[:8]
    assert "BG-GAP" in proc.stderr and "ONLY-BG-T" in proc.stderr


def test_resume_keeps_what_was_written(default_run, tmp_path):
    out, _ = default_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = (copy / "examples.jsonl").read_text()
    stamp = (copy / "variants" / "ORIGINAL" / "dataset.json").stat().st_mtime_ns
    proc = threedb("--out", str(copy), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert (copy / "examples.jsonl").read_text() == before             # the model was not scored again
    assert (copy / "variants" / "ORIGINAL" / "dataset.json").stat().st_mtime_ns == stamp
    first, again = (json.loads((d / "report.json").read_text()) for d in (out, copy))
    assert first["models"] == again["models"]


# ------------------------------------------------------------------------------------ bad input

def _folder_dataset(root: Path, per_class: int) -> tuple[Path, list[tuple[str, str, np.ndarray]]]:
    """An image-folder tree (no masks) of ``per_class`` held-out renders per class; returns the files."""
    ds = ImageDataset(HELDOUT)
    taken: dict[int, int] = {}
    files = []
    for record in ds.records:
        if taken.get(record.label, 0) >= per_class:
            continue
        taken[record.label] = taken.get(record.label, 0) + 1
        folder = ds.header["classes"][record.label]["folder"]
        dest = root / folder / record.file.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record.file, dest)
        files.append((f"{folder}/{record.file.name}", ds.classes[record.label],
                      np.array(Image.open(record.passes["mask"])) > 0))
    return root, files


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(f"base_config: {ROOT / 'configs' / 'bg_variants_quickstart.yaml'}\n{text}")
    return path


def test_dataset_without_masks_or_boxes_is_one_error(tmp_path):
    root, _ = _folder_dataset(tmp_path / "plain", 1)
    config = _config(tmp_path, f"data: {{root: {root}}}\n")
    proc = threedb(str(config), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "neither object masks nor boxes" in proc.stderr and "data.root" in proc.stderr
    assert str(config) in proc.stderr and not (tmp_path / "out").exists()
    assert "Traceback" not in proc.stderr


def test_several_boxes_are_filtered_with_a_count_and_grabcut_is_recorded(tmp_path):
    root, files = _folder_dataset(tmp_path / "boxed", 4)
    images, annotations = [], []
    for k, (name, class_name, mask) in enumerate(files):
        images.append({"id": k, "file_name": name})
        if k == 5:
            continue                                  # an image without a box
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        classes = sorted({c for _, c, _ in files})
        annotations.append({"id": len(annotations), "image_id": k, "category_id": classes.index(class_name),
                            "bbox": box})
        if k in (0, 9):                               # two images with a second box
            annotations.append({"id": len(annotations), "image_id": k, "category_id": classes.index(class_name),
                                "bbox": [0, 0, 4, 4]})
    coco = tmp_path / "boxes.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": i, "name": c} for i, c in enumerate(sorted({c for _, c, _ in files}))]}))
    config = _config(tmp_path, f"data: {{root: {root}, max_examples: null}}\n"
                     f"foreground: {{coco: {coco}, grabcut_iterations: 3}}\n"
                     "variants: [ORIGINAL, ONLY-FG, ONLY-BG-T, MIXED-RAND]\nadversarial: {enabled: false}\n")
    out = tmp_path / "out"
    proc = threedb(str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["variants"]["foreground_method"] == "grabcut"
    assert report["variants"]["grabcut_iterations"] == 3
    assert report["variants"]["counts"]["boxes_not_one"] == 3            # two with 2 boxes, one with none
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["grabcut_iterations"] for r in rows if r["variant"] == "ONLY-FG"} == {3}
    assert {r["foreground_method"] for r in rows if r["variant"] == "ONLY-FG"} == {"grabcut"}


def test_too_few_images_to_balance_is_one_error_and_nothing_is_lost(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = threedb("--out", str(out), "--set", "data.max_examples=11")     # 1 per class; MIXED-SAME needs 2
    assert proc.returncode == 2
    assert "fewer than the 2 needed to balance" in proc.stderr and "data" in proc.stderr
    assert "bg_variants_quickstart.yaml" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_boxes_asked_on_a_dataset_without_boxes_is_one_error(tmp_path):
    proc = threedb("--out", str(tmp_path / "out"), "--set", "foreground.source=boxes")
    assert proc.returncode == 2
    assert "foreground.source" in proc.stderr and "has no boxes" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_key_is_one_error_naming_file_and_key(tmp_path):
    config = _config(tmp_path, "adversarial: {budgett: 3}\n")
    proc = threedb(str(config), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "adversarial.budgett" in proc.stderr and str(config) in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_model_spec_is_one_error_naming_the_key(tmp_path):
    config = _config(tmp_path, f"models: [{{name: other, card: {tmp_path / 'missing.json'}}}]\n")
    proc = threedb(str(config), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "models[0].card" in proc.stderr and "missing.json" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_two_models_are_scored_on_the_same_variants(tmp_path):
    config = _config(tmp_path, f"models: [{{name: again, card: {CARD}}}]\ndata: {{max_examples: 22}}\n"
                     "adversarial: {budget: 2}\n")
    out = tmp_path / "out"
    proc = threedb(str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"model", "again"}
    assert report["models"]["model"]["accuracy"] == report["models"]["again"]["accuracy"]   # the same weights
