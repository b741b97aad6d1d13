"""The exported dataset format (versioned): file names, version and the validation of ``dataset.json``.

Layout of an exported dataset ``DIR`` (see docs/datasets.md)::

    dataset.json                 format name + version, class list, source run, counts, passes
    samples.jsonl                one JSON line per sample: id, file, label, class, uid, environment, params
    images/<folder>/<id>.png     RGB, a torchvision ImageFolder tree (folder = class name, or uid)
    masks/<folder>/<id>.png      object masks (0/255), when the run logged the ``mask`` pass
    depth/<folder>/<id>.exr      float32 depth (channel ``Y``), when the run logged ``depth``
    <pass>/<folder>/<id>.<ext>   any other logged pass, the same way
    source_config.yaml           the run's resolved configuration (provenance), when it had one
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from threedb.evaluators.datasets.errors import DatasetError

FORMAT_NAME = "threedb-dataset"
#: Version written by the exporter; bump it (and keep reading older ones) when the layout changes.
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

DATASET_JSON = "dataset.json"
SAMPLES = "samples.jsonl"
IMAGES = "images"
SOURCE_CONFIG = "source_config.yaml"
#: Folder of each pass (a pass not named here goes to a folder of its own name).
PASS_DIRS = {"mask": "masks"}


def pass_dir(name: str) -> str:
    """The top-level folder of pass ``name`` in an exported dataset."""
    return PASS_DIRS.get(name, name)


def read_header(root: str | Path) -> dict[str, Any]:
    """Read and check ``root/dataset.json``: our format name, a supported version, a class list."""
    path = Path(root) / DATASET_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "missing: not an exported threedb dataset") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(path, f"unreadable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DatasetError(path, f"format is {found!r}, expected {FORMAT_NAME!r}")
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(path, f"unknown dataset version {version!r}; this threedb reads versions "
                                 f"{sorted(SUPPORTED_VERSIONS)}")
    classes = data.get("classes")
    if (not isinstance(classes, list) or not classes
            or not all(isinstance(c, dict) and {"uid", "name", "folder"} <= set(c) for c in classes)):
        raise DatasetError(path, "'classes' must be a non-empty list of {index, uid, name, folder}")
    for i, entry in enumerate(classes):
        if entry.get("index", i) != i:
            raise DatasetError(path, f"classes[{i}] has index {entry.get('index')!r}, expected {i}")
    if not isinstance(data.get("passes", {}), dict):
        raise DatasetError(path, "'passes' must be a mapping {pass: {dir, format}}")
    return data


def class_entries(header: Mapping[str, Any] | None, names: Sequence[str]) -> list[dict[str, Any]]:
    """The ``classes`` list of a derived dataset (``{index, uid, name, folder}``): an exported dataset's own
    ``header`` classes, else one entry per class name (the name as uid and, when it is a safe path
    component, as folder; ``class_<i>`` otherwise)."""
    if header is not None:
        return [{"index": i, "uid": c["uid"], "name": c["name"], "folder": c["folder"]}
                for i, c in enumerate(header["classes"])]
    return [{"index": i, "uid": name, "name": name, "folder": name if _safe(name) else f"class_{i}"}
            for i, name in enumerate(names)]


def _safe(name: str) -> bool:
    from threedb.evaluators.datasets.export import safe_name

    return safe_name(name)
