"""Datasets: ``threedb dataset export`` of a real run (Blender renders, 64 px) read back by ImageDataset,
and ImageDataset on synthetic image-folder trees with masks, COCO and Pascal VOC boxes; bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from threedb.evaluators.datasets import DatasetError, ImageDataset, export_run
from threedb.sim.cli import main
from threedb.sim.render.files import read_exr
from threedb.sim.store import read_rows

REPO = Path(__file__).resolve().parents[1]


# -- a real run, exported ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A render-only run: 2 objects x 2 environments x 3 random jobs, a third of them failing."""
    tmp = tmp_path_factory.mktemp("run")
    config = {
        "seed": 0,
        "assets": {"root": "default", "objects": ["mug", "duck"], "environments": ["city", "studio"]},
        "render": {"resolution": 64, "samples": 1, "passes": ["mask", "depth"], "threads": 1},
        "controls": [{"type": "orientation", "rotation_z": [-3.0, 3.0]},
                     {"file": str(REPO / "tests" / "plugins" / "always_fails.py"), "fail": {"choices": [0, 1]}}],
        "policy": {"type": "random", "samples": 3},
        "logging": {"extra_passes": ["mask", "depth"]},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "run", str(tmp / "config.yaml"),
                           "--out", str(tmp / "run"), "--render-workers", "1", "--max-attempts", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(read_rows(tmp / "run"))
    statuses = {r["status"] for r in rows}
    assert statuses == {"ok", "failed"}, "the fixture needs succeeded and failed rows"
    return tmp / "run"


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "ds"
    assert main(["dataset", "export", str(run_dir), "--out", str(out)]) == 0
    return out


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img)


def test_export_round_trip(run_dir, exported):
    rows = list(read_rows(run_dir))
    ok = [r for r in rows if r["status"] == "ok"]
    header = json.loads((exported / "dataset.json").read_text())
    assert header["format"] == "threedb-dataset" and header["version"] == 1
    # default class list: uids sorted by folder; names from the default catalog
    assert [(c["index"], c["uid"], c["name"], c["folder"]) for c in header["classes"]] == \
        [(0, "duck", "duck", "duck"), (1, "mug", "mug", "mug")]
    assert header["counts"]["samples"] == len(ok)
    assert header["counts"]["skipped"]["failed"] == len(rows) - len(ok) > 0
    assert set(header["passes"]) == {"mask", "depth"}
    assert header["environments"] == ["city.exr", "studio.exr"]

    ds = ImageDataset(exported)
    assert len(ds) == len(ok) and ds.classes == ["duck", "mug"] and ds.class_uids == ["duck", "mug"]
    by_id = {r["id"]: r for r in ok}
    assert {r.id for r in ds.records} == set(by_id)
    images = run_dir / "images"
    for index in range(len(ds)):
        image, label, target = ds[index]
        row = by_id[target["id"]]
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
        assert np.array_equal(image.permute(1, 2, 0).numpy(), pixels(images / f"{row['id']}_rgb.png"))
        assert label == ds.classes.index(row["object_uid"])
        assert target["params"] == row["render_args"]
        assert target["environment"] == row["environment"] and target["object_uid"] == row["object_uid"]
        source_mask = pixels(images / f"{row['id']}_mask.png")
        assert target["mask"].dtype == torch.bool and 0 < int(target["mask"].sum()) < 64 * 64
        assert np.array_equal(target["mask"].numpy(), source_mask == 255)
        assert target["depth"].dtype == torch.float32
        assert np.array_equal(target["depth"].numpy(), read_exr(images / f"{row['id']}_depth.exr")["Y"])
    # the per-sample file also names every file and carries the parameters
    samples = [json.loads(line) for line in (exported / "samples.jsonl").read_text().splitlines()]
    assert all(s["render_args"] == by_id[s["id"]]["render_args"] for s in samples)
    assert all(set(s["passes"]) == {"mask", "depth"} for s in samples)


def test_torchvision_imagefolder_agrees(exported):
    from torchvision.datasets import ImageFolder

    ours = ImageDataset(exported)
    theirs = ImageFolder(str(exported / "images"))
    assert theirs.classes == [c["folder"] for c in ours.header["classes"]]
    assert [(str(Path(p).resolve()), t) for p, t in theirs.samples] == ours.samples
    # and the same tree read as a plain image folder with its masks gives the same labels and masks
    folder = ImageDataset(exported / "images", masks=exported / "masks")
    assert folder.targets == ours.targets and folder.classes == ["duck", "mug"]
    assert torch.equal(folder[0][2]["mask"], ours[0][2]["mask"])


def test_split_by_environment_and_loader(exported):
    ds = ImageDataset(exported)
    train, test = ds.split_by_environment(["studio"])
    assert {r.environment for r in train.records} == {"city.exr"}
    assert {r.environment for r in test.records} == {"studio.exr"}
    assert len(train) + len(test) == len(ds) and len(test) > 0
    assert [r.id for r in ds.subset(environments=["studio.exr"]).records] == [r.id for r in test.records]
    assert {r.label for r in ds.subset(labels=[1]).records} == {1}
    with pytest.raises(DatasetError, match="nowhere"):
        ds.subset(environments=["nowhere"])
    loader = torch.utils.data.DataLoader(test, batch_size=3, collate_fn=ImageDataset.collate)
    images, labels, targets = next(iter(loader))
    assert images.shape == (3, 3, 64, 64) and labels.tolist() == test.targets[:3] and len(targets) == 3
    plain = ImageDataset(exported, extras=False, transform=lambda img: torch.zeros(1))
    assert len(plain[0]) == 2 and plain[0][1] == ds.targets[0]


def test_export_classes_and_cli_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "mugs"
    assert main(["dataset", "export", str(run_dir), "--out", str(out), "--classes", "mug"]) == 0
    header = json.loads((out / "dataset.json").read_text())
    assert [c["uid"] for c in header["classes"]] == ["mug"]
    assert header["counts"]["skipped"]["other_class"] > 0
    assert {s.object_uid for s in ImageDataset(out).records} == {"mug"}

    (tmp_path / "classes.txt").write_text("# label order\nmug\nduck\n")
    reordered = export_run(run_dir, tmp_path / "reordered", classes=["mug", "duck"])
    assert [c["uid"] for c in reordered["classes"]] == ["mug", "duck"]
    assert main(["dataset", "export", str(run_dir), "--out", str(tmp_path / "f"),
                 "--classes-file", str(tmp_path / "classes.txt")]) == 0
    assert ImageDataset(tmp_path / "f").class_uids == ["mug", "duck"]

    capsys.readouterr()
    for argv, needle in ([str(run_dir), "--out", str(out)], "not an empty folder"),  \
                        ([str(run_dir), "--out", str(tmp_path / "x"), "--classes", "mug,teapot"], "teapot"), \
                        ([str(tmp_path / "nothing"), "--out", str(tmp_path / "y")], "details.log"):
        assert main(["dataset", "export", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_include_failed_rows_without_images_are_counted(run_dir, tmp_path):
    header = export_run(run_dir, tmp_path / "all", include_failed=True)
    failed = sum(r["status"] == "failed" for r in read_rows(run_dir))
    # a control failed before rendering: those rows have no image to export
    assert header["counts"]["skipped"]["no_image"] == failed and header["counts"]["skipped"]["failed"] == 0


# -- bad exported datasets -------------------------------------------------------------------------
@pytest.fixture()
def broken(exported, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    return copy


def edit_samples(root: Path, change) -> None:
    path = root / "samples.jsonl"
    samples = [json.loads(line) for line in path.read_text().splitlines()]
    change(samples)
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))


def test_missing_image(broken):
    first = json.loads((broken / "samples.jsonl").read_text().splitlines()[0])
    (broken / first["file"]).unlink()
    with pytest.raises(DatasetError, match=first["id"] + r"\.png: missing image"):
        ImageDataset(broken)


def test_label_outside_class_list(broken):
    edit_samples(broken, lambda s: s[1].update(label=5))
    with pytest.raises(DatasetError, match=r"samples\.jsonl:2: label 5 is outside the class list"):
        ImageDataset(broken)


def test_mask_size_differs(broken):
    first = json.loads((broken / "samples.jsonl").read_text().splitlines()[0])
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(broken / first["passes"]["mask"])
    with pytest.raises(DatasetError, match=first["passes"]["mask"]):
        ImageDataset(broken)


def test_unknown_version_and_format(broken):
    path = broken / "dataset.json"
    header = json.loads(path.read_text())
    path.write_text(json.dumps({**header, "version": 99}))
    with pytest.raises(DatasetError, match=r"dataset\.json: unknown dataset version 99"):
        ImageDataset(broken)
    path.write_text(json.dumps({**header, "format": "something-else"}))
    with pytest.raises(DatasetError, match=r"dataset\.json: format is 'something-else'"):
        ImageDataset(broken)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json: unreadable JSON"):
        ImageDataset(broken)


def test_path_outside_dataset_refused(broken):
    edit_samples(broken, lambda s: s[0].update(file="../../etc/passwd"))
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        ImageDataset(broken)


# -- real-dataset layouts (synthetic files) --------------------------------------------------------
def write_tree(root: Path, sizes: dict[str, tuple[int, int]], *, masks: bool = True) -> dict[str, np.ndarray]:
    """root/<class>/<stem>.png (random pixels) and masks/<class>/<stem>.png; returns pixels by rel path."""
    rng = np.random.default_rng(0)
    written = {}
    for rel, (w, h) in sizes.items():
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / rel)
        written[rel] = image
        if masks:
            mask = np.zeros((h, w), np.uint8)
            mask[: h // 2] = 255
            (root / "masks" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save((root / "masks" / rel).with_suffix(".png"))
    return written


SIZES = {"cat/b.png": (20, 10), "cat/a.png": (16, 12), "dog/c.png": (8, 8)}


def test_image_folder_with_masks(tmp_path):
    written = write_tree(tmp_path, SIZES)
    ds = ImageDataset(tmp_path / "images", masks=tmp_path / "masks")
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 1]
    assert [r.id for r in ds.records] == ["cat/a", "cat/b", "dog/c"]  # deterministic: label, then path
    image, label, target = ds[1]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), written["cat/b.png"]) and label == 0
    assert target["mask"].shape == (10, 20) and bool(target["mask"][0, 0]) and not bool(target["mask"][-1, 0])
    with pytest.raises(DatasetError, match="'dog' is outside the class list"):
        ImageDataset(tmp_path / "images", classes=["cat"])
    with pytest.raises(DatasetError, match="no environment"):
        ds.subset(environments=["city"])


def test_nested_tree_order_matches_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder

    write_tree(tmp_path, {"cat/b.png": (4, 4), "cat/a/x.png": (4, 4), "cat/a-b/y.jpg": (4, 4),
                          "cat/a/sub/z.png": (4, 4), "dog/c.png": (4, 4)}, masks=False)
    (tmp_path / "images" / "dog" / "notes.txt").write_text("not an image")
    ds = ImageDataset(tmp_path / "images")
    theirs = ImageFolder(str(tmp_path / "images"))
    assert [(str(Path(p).resolve()), t) for p, t in theirs.samples] == ds.samples
    assert [r.id for r in ds.records] == ["cat/b", "cat/a/x", "cat/a-b/y", "cat/a/sub/z", "dog/c"]


def test_image_folder_bad_masks(tmp_path):
    write_tree(tmp_path, SIZES)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / "cat" / "a.png")
    with pytest.raises(DatasetError, match=r"masks/cat/a\.png: mask is \(5, 5\)"):
        ImageDataset(tmp_path / "images", masks=tmp_path / "masks")
    (tmp_path / "masks" / "dog" / "c.png").unlink()
    (tmp_path / "masks" / "cat" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"masks/cat/a\.png: missing mask"):
        ImageDataset(tmp_path / "images", masks=tmp_path / "masks")


def coco_file(tmp_path: Path, **override) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "cat/a.png", "width": 16, "height": 12},
                   {"id": 2, "file_name": "c.png", "width": 8, "height": 8}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 5]},
                        {"id": 11, "image_id": 1, "category_id": 8, "bbox": [0, 0, 3, 3]},
                        {"id": 12, "image_id": 2, "category_id": 8, "bbox": [2.5, 1, 4, 4]}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 8, "name": "dog"}],
    }
    data.update(override)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_image_folder_with_coco_boxes(tmp_path):
    write_tree(tmp_path, SIZES, masks=False)
    ds = ImageDataset(tmp_path / "images", coco=coco_file(tmp_path))
    by_id = {ds[i][2]["id"]: ds[i][2] for i in range(len(ds))}
    assert by_id["cat/a"]["boxes"].tolist() == [[1, 2, 11, 7], [0, 0, 3, 3]]
    assert by_id["cat/a"]["box_labels"].tolist() == [0, 1]
    assert by_id["dog/c"]["boxes"].tolist() == [[2.5, 1, 6.5, 5]]   # matched by base name
    assert by_id["cat/b"]["boxes"].shape == (0, 4)                  # no annotation: no boxes


@pytest.mark.parametrize("override, needle", [
    ({"annotations": [{"image_id": 1, "category_id": 7, "bbox": [1, 2, 3]}]}, r"annotations\[0\]: bbox"),
    ({"annotations": [{"image_id": 9, "category_id": 7, "bbox": [1, 2, 3, 4]}]}, "image_id 9"),
    ({"categories": [{"id": 7, "name": "cat"}, {"id": 8, "name": "horse"}]}, "'horse' is outside the class list"),
    ({"annotations": [{"image_id": 1, "category_id": 7, "bbox": [10, 2, 30, 4]}]}, "outside the 16x12 image"),
    ({"images": "nope"}, "'images' must be a list"),
])
def test_bad_coco(tmp_path, override, needle):
    write_tree(tmp_path, SIZES, masks=False)
    with pytest.raises(DatasetError, match=needle) as info:
        ImageDataset(tmp_path / "images", coco=coco_file(tmp_path, **override))
    assert str(info.value).startswith(str(tmp_path / "coco.json"))
    (tmp_path / "coco.json").write_text("{broken")
    with pytest.raises(DatasetError, match=r"coco\.json: unreadable COCO JSON"):
        ImageDataset(tmp_path / "images", coco=tmp_path / "coco.json")


def voc_xml(objects: list[tuple[str, tuple[int, int, int, int]]], size: tuple[int, int] | None) -> str:
    parts = ["<annotation><filename>x.png</filename>"]
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, (x1, y1, x2, y2) in objects:
        parts.append(f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc(tmp_path: Path) -> Path:
    voc = tmp_path / "Annotations"
    (voc / "cat").mkdir(parents=True)
    (voc / "cat" / "a.xml").write_text(voc_xml([("cat", (2, 3, 10, 12))], (16, 12)))
    (voc / "cat" / "b.xml").write_text(voc_xml([], None))
    (voc / "c.xml").write_text(voc_xml([("dog", (1, 1, 8, 8)), ("cat", (3, 3, 4, 4))], (8, 8)))  # flat layout
    return voc


def test_image_folder_with_voc_boxes(tmp_path):
    write_tree(tmp_path, SIZES, masks=False)
    ds = ImageDataset(tmp_path / "images", voc=write_voc(tmp_path))
    targets = {ds[i][2]["id"]: ds[i][2] for i in range(len(ds))}
    assert targets["cat/a"]["boxes"].tolist() == [[1, 2, 10, 12]]  # 1-based corners -> 0-based
    assert targets["cat/b"]["boxes"].shape == (0, 4)
    assert targets["dog/c"]["boxes"].tolist() == [[0, 0, 8, 8], [2, 2, 4, 4]]
    assert targets["dog/c"]["box_labels"].tolist() == [1, 0]


@pytest.mark.parametrize("xml, needle", [
    ("<annotation><object>", "unreadable XML"),
    (voc_xml([("horse", (1, 1, 2, 2))], (16, 12)), "'horse' is outside the class list"),
    (voc_xml([("cat", (1, 1, 2, 2))], (20, 20)), r"<size> says \(20, 20\)"),
    (voc_xml([("cat", (5, 1, 2, 2))], None), "x1 <= x2"),
    ("<annotation><object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
     "xmin: expected a number"),
])
def test_bad_voc(tmp_path, xml, needle):
    write_tree(tmp_path, SIZES, masks=False)
    voc = write_voc(tmp_path)
    (voc / "cat" / "a.xml").write_text(xml)
    with pytest.raises(DatasetError, match=needle) as info:
        ImageDataset(tmp_path / "images", voc=voc)
    assert str(info.value).startswith(str(voc / "cat" / "a.xml"))
    write_voc(tmp_path.joinpath("fresh"))
    shutil.copy(tmp_path / "fresh" / "Annotations" / "cat" / "a.xml", voc / "cat" / "a.xml")
    (voc / "cat" / "b.xml").unlink()
    with pytest.raises(DatasetError, match=r"b\.xml: missing Pascal VOC annotation file"):
        ImageDataset(tmp_path / "images", voc=voc)
