"""The resampled training set of a projection job, written as an exported threedb dataset (format
``threedb-dataset`` version 1, docs/datasets.md) that ``ImageDataset`` and ``threedb train`` read.

Each drawn source sample becomes a new sample ``r000000, r000001, ...`` (drawn with replacement, a source
image may appear several times) whose image (and passes, e.g. masks) is a copy of the source's, labelled
with the target class it was drawn for, in the target's class list. It keeps the source's render metadata
(``environment``, ``render_args``) and says where it came from (``source_id``, ``group``)."""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from threedb.evaluators.datasets.format import DATASET_JSON, FORMAT_NAME, FORMAT_VERSION, IMAGES, SAMPLES, pass_dir
from threedb.evaluators.datasets.format import class_entries as dataset_class_entries
from threedb.evaluators.project.data import Side
from threedb.evaluators.project.groups import Grouping


def class_entries(target: Side) -> list[dict[str, Any]]:
    """The resampled dataset's class list: the target's (uid, name and folder of an exported target)."""
    return dataset_class_entries(target.dataset.header, target.classes)


def write_resampled(folder: Path, target: Side, source: Side, indices: Sequence[int], labels: Sequence[int],
                    group_ids: Sequence[int], grouping: Grouping, *, note: Mapping[str, Any]) -> dict[str, Any]:
    """Write the samples ``source[indices[j]]`` labelled ``labels[j]`` (target class indices) into
    ``folder`` (replaced if it exists: it is derived data); returns the written ``dataset.json``."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    classes = class_entries(target)
    records = source.records
    meta = source.meta
    samples: list[dict[str, Any]] = []
    pass_formats: dict[str, dict[str, str]] = {}
    per_class = {c["folder"]: 0 for c in classes}
    for j, (index, label, gid) in enumerate(zip(indices, labels, group_ids)):
        record = records[int(index)]
        entry = classes[int(label)]
        sample_id = f"r{j:06d}"
        file = f"{IMAGES}/{entry['folder']}/{sample_id}{record.file.suffix.lower()}"
        _copy(record.file, tmp / file)
        passes = {}
        for name, src in sorted(record.passes.items()):
            dest = f"{pass_dir(name)}/{entry['folder']}/{sample_id}{src.suffix.lower()}"
            _copy(src, tmp / dest)
            passes[name] = dest
            pass_formats.setdefault(name, {"dir": pass_dir(name), "format": src.suffix.lower()[1:]})
        info = meta[int(index)] if meta is not None else None
        sample: dict[str, Any] = {"id": sample_id, "file": file, "label": int(label), "class_name": entry["name"],
                                  "source_id": record.id, "source_class": source.classes[record.label],
                                  "group": int(gid), "group_name": grouping.name(int(gid)), "passes": passes}
        if info is not None:
            if info.object_uid == entry["uid"]:
                sample["object_uid"] = info.object_uid      # the reader checks it against the class uid
            sample.update(environment=info.environment, source_object_uid=info.object_uid,
                          render_args=dict(info.params))
        samples.append(sample)
        per_class[entry["folder"]] += 1
    for entry in classes:
        (tmp / IMAGES / entry["folder"]).mkdir(parents=True, exist_ok=True)    # empty classes keep their label
    with open(tmp / SAMPLES, "w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, allow_nan=False) + "\n")
    header = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "classes": classes,
        "class_order": "the target dataset's", "samples": SAMPLES, "passes": pass_formats,
        "environments": sorted({str(s["environment"]) for s in samples if s.get("environment")}),
        "counts": {"samples": len(samples), "per_class": per_class},
        "source": {"target": str(target.dataset.root), "source": str(source.dataset.root), **dict(note)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (tmp / DATASET_JSON).write_text(json.dumps(header, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return header


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def group_counts(group_ids: Sequence[int], grouping: Grouping) -> dict[str, int]:
    """How many drawn samples each group gave (by group name)."""
    out: dict[str, int] = {}
    for gid in group_ids:
        name = grouping.name(int(gid))
        out[name] = out.get(name, 0) + 1
    return out


__all__ = ["class_entries", "group_counts", "write_resampled"]
