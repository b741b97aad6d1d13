"""Bounding boxes of real datasets: a COCO json file or a Pascal VOC folder of xml files.

Boxes come out as ``[x1, y1, x2, y2]`` in pixels, 0-based and continuous (a box covering the whole
W x H image is ``[0, 0, W, H]``), with labels that are indices into the dataset's class list (the
annotation's category name must be one of the classes).
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET  # expat >= 2.4 bounds entity expansion; external entities are never fetched
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from threedb.evaluators.datasets.errors import DatasetError

#: How far (pixels) a box may reach outside its image before it counts as malformed.
_TOLERANCE = 1.0


@dataclass
class Boxes:
    """The boxes of one image: ``boxes[i] = [x1, y1, x2, y2]`` (pixels) with class index ``labels[i]``."""

    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def check_box(box: list[float], size: tuple[int, int], where: str, path: str | Path) -> None:
    """Raise unless ``box`` is a finite, non-inverted box inside a ``(width, height)`` image."""
    x1, y1, x2, y2 = box
    width, height = size
    if not all(math.isfinite(v) for v in box) or x2 < x1 or y2 < y1:
        raise DatasetError(path, f"{where}: box {box} is not [x1, y1, x2, y2] with x1 <= x2, y1 <= y2")
    if x1 < -_TOLERANCE or y1 < -_TOLERANCE or x2 > width + _TOLERANCE or y2 > height + _TOLERANCE:
        raise DatasetError(path, f"{where}: box {box} lies outside the {width}x{height} image")


def _number(value: Any, where: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(path, f"{where}: expected a number, got {value!r}")
    return float(value)


def load_coco(path: str | Path, class_to_idx: Mapping[str, int]) -> dict[str, Boxes]:
    """``{file_name: Boxes}`` of every image a COCO-style json names (``images``, ``annotations`` with
    ``bbox = [x, y, w, h]``, ``categories`` with ``name``); images without annotations get no boxes."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "missing COCO annotation file") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(path, f"unreadable COCO JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(path, "a COCO file is a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(path, f"'{key}' must be a list")
    categories: dict[Any, int] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise DatasetError(path, f"categories[{i}]: expected {{id, name}}")
        if cat["name"] not in class_to_idx:
            raise DatasetError(path, f"categories[{i}]: {cat['name']!r} is outside the class list "
                                     f"{sorted(class_to_idx)}")
        categories[cat["id"]] = class_to_idx[cat["name"]]
    files: dict[Any, str] = {}
    out: dict[str, Boxes] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DatasetError(path, f"images[{i}]: expected {{id, file_name}}")
        if image["id"] in files:
            raise DatasetError(path, f"images[{i}]: image id {image['id']!r} repeated")
        files[image["id"]] = image["file_name"]
        out.setdefault(image["file_name"], Boxes())
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise DatasetError(path, f"{where}: expected an object")
        if ann.get("image_id") not in files:
            raise DatasetError(path, f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in categories:
            raise DatasetError(path, f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DatasetError(path, f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (_number(v, f"{where}.bbox", path) for v in bbox)
        if w < 0 or h < 0:
            raise DatasetError(path, f"{where}: bbox {bbox} has a negative size")
        boxes = out[files[ann["image_id"]]]
        boxes.boxes.append([x, y, x + w, y + h])
        boxes.labels.append(categories[ann["category_id"]])
    return out


def load_voc(path: str | Path, class_to_idx: Mapping[str, int]) -> tuple[Boxes, tuple[int, int] | None]:
    """The boxes of one Pascal VOC xml file and its declared ``(width, height)`` (``None`` without
    ``<size>``). VOC's 1-based inclusive pixel corners become 0-based continuous ones (x1 - 1, y1 - 1)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(path, "missing Pascal VOC annotation file") from None
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(path, f"unreadable XML ({exc})") from None
    if root.tag != "annotation":
        raise DatasetError(path, f"root element is <{root.tag}>, expected <annotation>")

    def number(node: ET.Element, tag: str, where: str) -> float:
        text = node.findtext(tag)
        try:
            return float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DatasetError(path, f"{where}/{tag}: expected a number, got {text!r}") from None

    size = None
    size_node = root.find("size")
    if size_node is not None:
        size = (int(number(size_node, "width", "size")), int(number(size_node, "height", "size")))
    boxes = Boxes()
    for i, obj in enumerate(root.findall("object")):
        where = f"object[{i}]"
        name = (obj.findtext("name") or "").strip()
        if name not in class_to_idx:
            raise DatasetError(path, f"{where}/name: {name!r} is outside the class list {sorted(class_to_idx)}")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(path, f"{where}: no <bndbox>")
        x1, y1, x2, y2 = (number(box, tag, f"{where}/bndbox") for tag in ("xmin", "ymin", "xmax", "ymax"))
        boxes.boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])
        boxes.labels.append(class_to_idx[name])
    return boxes, size
