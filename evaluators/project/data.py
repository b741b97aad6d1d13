"""The target and source datasets of a projection job: an ``ImageDataset`` each, filtered (environments,
split, stratified cap), with the render metadata of every sample (environment, object, control values) from
the exported dataset's ``samples.jsonl`` or joined by id from a run's ``details.log``."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from threedb.evaluators.datasets import DatasetError
from threedb.evaluators.jobs.config import JobConfig
from threedb.evaluators.jobs.data import stratified
from threedb.evaluators.project.config import DatasetSection, ProjectSchema
from threedb.sim import store


@dataclass(frozen=True)
class RenderMeta:
    """What a render group is made of, for one sample: its environment file, object uid and control values
    (``render_args``: ``{"CameraControl.zoom_factor": 1.1, ...}``); ``None`` where unknown."""

    environment: Optional[str]
    object_uid: Optional[str]
    params: Mapping[str, Any]


@dataclass
class Side:
    """One side of the projection (``target`` or ``source``): the dataset, the chosen samples (indices into
    ``dataset.records``, in order) and, when known, their render metadata and the render config they came from."""

    key: str
    dataset: Any
    indices: list[int]
    meta: Optional[list[RenderMeta]]
    meta_from: Optional[str]
    run_config: Optional[Path]

    @property
    def records(self) -> list[Any]:
        return [self.dataset.records[i] for i in self.indices]

    @property
    def labels(self) -> list[int]:
        return [self.dataset.records[i].label for i in self.indices]

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    def __len__(self) -> int:
        return len(self.indices)


def split_part(sample_id: str, parts: int, seed: int = 0) -> int:
    """The part (``0..parts-1``) of a sample: a hash of its id and ``seed``, so it does not depend on which
    other samples are present."""
    digest = hashlib.sha256(f"{seed}/{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % parts


def _details_rows(config: JobConfig[ProjectSchema], key: str, value: str) -> tuple[dict[str, dict[str, Any]], Path]:
    """``({job id: row}, run directory)`` of the ``details.log`` named by ``key`` (a run directory or the file)."""
    path = Path(value)
    run_dir = path if path.is_dir() else path.parent
    log = run_dir / store.DETAILS
    if not log.is_file() or (not path.is_dir() and path.name != store.DETAILS):
        raise config.error(key, f"no run details found at {path} (expected a run directory holding {store.DETAILS}, "
                           "or that file)", value=value)
    rows: dict[str, dict[str, Any]] = {}
    try:
        for line, row in enumerate(store.read_rows(run_dir), 1):
            if not isinstance(row, dict) or "id" not in row:
                raise DatasetError(log, "not a row object with an 'id'", line=line)
            rows[str(row["id"])] = row
    except ValueError as exc:
        raise DatasetError(log, f"unreadable row ({exc})") from None
    return rows, run_dir


def _join_key(record_id: str, rows: Mapping[str, Any]) -> Optional[str]:
    """The details.log id of a sample: its own id, else its file stem (an image folder's ``class/stem``),
    else that stem without the run's ``_rgb`` suffix."""
    stem = record_id.rsplit("/", 1)[-1]
    for candidate in (record_id, stem, stem[:-4] if stem.endswith("_rgb") else None):
        if candidate is not None and candidate in rows:
            return candidate
    return None


def _meta_from_row(row: Mapping[str, Any]) -> RenderMeta:
    obj = row.get("object_uid") or (Path(str(row["model"])).stem if row.get("model") else None)
    return RenderMeta(row.get("environment"), obj, dict(row.get("render_args") or {}))


def open_side(config: JobConfig[ProjectSchema], key: str) -> Side:
    """Open ``target:`` or ``source:``: the dataset with its filters applied, each problem a config error
    naming the key (or a dataset error naming the file)."""
    from threedb.evaluators.datasets import ImageDataset

    section: DatasetSection = getattr(config.schema, key)
    root = Path(section.root)
    if not root.is_dir():
        raise config.error(f"{key}.root", f"dataset folder not found: {root}", value=section.root)
    dataset = ImageDataset(root)
    for name in ("environments", "exclude_environments"):
        wanted = getattr(section, name)
        if wanted is not None:
            try:
                dataset = dataset.subset(**{name: wanted})
            except DatasetError as exc:
                raise config.error(f"{key}.{name}", str(exc), value=wanted) from None
    indices = list(range(len(dataset)))
    if section.split is not None:
        split = section.split
        indices = [i for i in indices if split_part(dataset.records[i].id, split.parts, split.seed) == split.part]
    if section.max_examples is not None:
        chosen = stratified([dataset.records[i].label for i in indices], section.max_examples)
        indices = [indices[i] for i in chosen]
    if not indices:
        raise config.error(key, f"dataset {root} has no samples after the filters of {key}: (environments, split)")

    meta: Optional[list[RenderMeta]] = None
    meta_from: Optional[str] = None
    run_config: Optional[Path] = None
    if section.details is not None:
        rows, run_dir = _details_rows(config, f"{key}.details", section.details)
        meta = []
        for i in indices:
            record = dataset.records[i]
            found = _join_key(record.id, rows)
            if found is None:
                raise config.error(f"{key}.details", f"sample {record.id!r} of {root} has no row in "
                                   f"{run_dir / store.DETAILS} (joined by id or file stem)", value=section.details)
            meta.append(_meta_from_row(rows[found]))
        meta_from = str(run_dir / store.DETAILS)
        if (run_dir / store.CONFIG).is_file():
            run_config = run_dir / store.CONFIG
    elif dataset.header is not None:
        meta = [RenderMeta(dataset.records[i].environment, dataset.records[i].object_uid,
                           dict(dataset.records[i].params or {})) for i in indices]
        meta_from = str(dataset.root / str(dataset.header.get("samples", "samples.jsonl")))
    if dataset.header is not None and run_config is None:
        provenance = (dataset.header.get("source") or {}).get("config")
        if provenance and (dataset.root / provenance).is_file():
            run_config = dataset.root / provenance
    return Side(key, dataset, indices, meta, meta_from, run_config)


def source_labels_in_target(target: Side, source: Side) -> list[int]:
    """Each source sample's class as an index into the target's class list (matched by class name),
    ``-1`` for a class the target does not have."""
    index = {name: i for i, name in enumerate(target.classes)}
    names = source.classes
    return [index.get(names[label], -1) for label in source.labels]


def describe(side: Side) -> dict[str, Any]:
    """The report's description of one side."""
    section_root = str(side.dataset.root)
    counts: dict[str, int] = {}
    for label in side.labels:
        counts[side.classes[label]] = counts.get(side.classes[label], 0) + 1
    return {"root": section_root, "size": len(side.dataset), "used": len(side), "classes": side.classes,
            "per_class": counts, "environments": sorted({m.environment for m in side.meta or [] if m.environment}),
            "metadata": side.meta_from, "render_config": str(side.run_config) if side.run_config else None}


__all__ = ["RenderMeta", "Side", "describe", "open_side", "source_labels_in_target", "split_part"]
