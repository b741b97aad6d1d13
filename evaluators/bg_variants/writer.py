"""Each variant written as an exported threedb dataset (format ``threedb-dataset`` v1, docs/datasets.md)
that ``ImageDataset`` and ``threedb train`` read: ``OUT/variants/<VARIANT>/`` with ``dataset.json``,
``samples.jsonl`` (one manifest row per image: source image, variant, background source, foreground
method) and ``images/<class>/<source id>.png``. A folder is written under a temporary name and renamed
when complete, so a kill never leaves half a dataset; a complete folder of the same rows is kept on resume."""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from PIL import Image

from threedb.evaluators.datasets.export import safe_name
from threedb.evaluators.datasets.format import (DATASET_JSON, FORMAT_NAME, FORMAT_VERSION, IMAGES, SAMPLES,
                                                class_entries)
from threedb.robustness.backgrounds import VariantSet

VARIANTS_DIR = "variants"


def dataset_class_entries(dataset: Any) -> list[dict[str, Any]]:
    """The variant datasets' class list: the source dataset's (uid, name, folder)."""
    return class_entries(getattr(dataset, "header", None), dataset.classes)


def manifest_rows(vset: VariantSet, variant: str, classes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``samples.jsonl`` rows of one variant: the dataset fields plus the manifest (:class:`VariantRow`)."""
    rows = []
    for row in vset.variant(variant):
        entry = classes[row.label]
        name = row.source_id if safe_name(row.source_id) else f"s{len(rows):06d}"
        rows.append({"id": row.source_id, "file": f"{IMAGES}/{entry['folder']}/{name}.png", "label": row.label,
                     "class_name": entry["name"], "passes": {}, **row.as_dict()})
    return rows


def complete(folder: Path, rows: Sequence[dict[str, Any]]) -> bool:
    """Whether ``folder`` already holds exactly ``rows`` (a finished write of the same variant)."""
    try:
        written = [json.loads(line) for line in (folder / SAMPLES).read_text().splitlines() if line]
        json.loads((folder / DATASET_JSON).read_text())
    except (OSError, ValueError):
        return False
    return written == list(rows) and all((folder / r["file"]).is_file() for r in rows)


def write_variant(root: Path, vset: VariantSet, variant: str, dataset: Any, *, note: dict[str, Any],
                  on_image: Optional[Callable[[], None]] = None) -> tuple[Path, list[dict[str, Any]], bool]:
    """Write one variant into ``root/variants/<variant>``; returns ``(folder, rows, written)`` where
    ``written`` is False when a complete identical folder was already there."""
    classes = dataset_class_entries(dataset)
    rows = manifest_rows(vset, variant, classes)
    folder = root / VARIANTS_DIR / variant
    if complete(folder, rows):
        return folder, rows, False
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for entry in classes:
        (tmp / IMAGES / entry["folder"]).mkdir(parents=True, exist_ok=True)   # empty classes keep their label
    per_class = {c["folder"]: 0 for c in classes}
    for row, (vrow, image) in zip(rows, vset.images(variant)):
        assert vrow.source_id == row["source_id"]
        Image.fromarray(image).save(tmp / row["file"], compress_level=1)
        per_class[classes[row["label"]]["folder"]] += 1
        if on_image is not None:
            on_image()
    with open(tmp / SAMPLES, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, allow_nan=False) + "\n" for r in rows)
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "classes": classes,
              "class_order": "the source dataset's", "samples": SAMPLES, "passes": {}, "environments": [],
              "counts": {"samples": len(rows), "per_class": per_class},
              "source": {"variant": variant, **note},
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (tmp / DATASET_JSON).write_text(json.dumps(header, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder, rows, True


__all__ = ["VARIANTS_DIR", "dataset_class_entries", "complete", "manifest_rows", "write_variant"]
