"""Source groups of a projection job: one integer id per source sample and a readable name per id.

* ``labels``: the source class;
* ``kmeans``: k-means clusters of the source features (scikit-learn, seeded), within each class when the
  projection matches labels (else over all sources);
* ``render``: the distinct combinations of render metadata (``environment``, ``object``, control values
  from ``render_args``), numeric controls binned (``bins: {key: count}``: equal-width bins over the
  observed range as :mod:`threedb.sim.binning` draws them, or ``bins: {key: [edges]}``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from threedb.evaluators.jobs.config import JobConfig
from threedb.evaluators.project.config import RENDER_KEYS, ProjectSchema
from threedb.evaluators.project.data import RenderMeta, Side
from threedb.sim.binning import bin_values

#: A numeric key without bins: one group per value up to this many distinct values.
MAX_VALUES = 10


@dataclass(frozen=True)
class Group:
    """One source group: ``parts`` maps each grouping key to its value (a category, a number, or a numeric
    bin ``{"range": [lo, hi]}``, the last bin of a key closed)."""

    id: int
    name: str
    parts: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()      #: one ``key=value`` label per part (render groups)


@dataclass
class Grouping:
    """Group ids of the source samples (``-1``: in no group) and the groups by id."""

    type: str
    ids: torch.Tensor
    groups: dict[int, Group]
    keys: list[str] = field(default_factory=list)           #: render: the resolved group_by keys
    bins: dict[str, dict[str, Any]] = field(default_factory=dict)   #: render: how each numeric key was binned

    def name(self, gid: int) -> str:
        return self.groups[gid].name


def short_key(key: str, keys: Sequence[str]) -> str:
    """``CameraControl.zoom_factor`` -> ``zoom_factor`` when no other key ends the same way."""
    tail = key.rsplit(".", 1)[-1]
    return tail if sum(1 for k in keys if k.rsplit(".", 1)[-1] == tail) == 1 else key


def label_groups(side: Side) -> Grouping:
    """Each source class is a group."""
    labels = torch.tensor(side.labels, dtype=torch.long)
    present = sorted(set(side.labels))
    return Grouping("labels", labels, {c: Group(c, side.classes[c], {"class": side.classes[c]}) for c in present})


def kmeans_groups(config: JobConfig[ProjectSchema], features: torch.Tensor, labels: Sequence[int],
                  class_names: Sequence[str], *, within_class: bool, seed: int) -> Grouping:
    """k-means clusters of ``features`` (``k`` from ``groups.k``); with ``within_class`` ``k`` clusters per
    class of ``labels`` (target class indices, ``-1`` left out), ids ``class * k + cluster``."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise config.error("groups.type", "groups.type: kmeans needs scikit-learn (pip install scikit-learn)",
                           value="kmeans") from None
    k = int(config.schema.groups.k)
    x = features.double().numpy()
    ids = np.full(len(x), -1, dtype=np.int64)
    groups: dict[int, Group] = {}
    pools = ([(c, np.flatnonzero(np.asarray(labels) == c)) for c in sorted({int(c) for c in labels if c >= 0})]
             if within_class else [(None, np.arange(len(x)))])
    for label, rows in pools:
        where = "" if label is None else f" of class {class_names[label]!r}"
        if len(rows) < k:
            raise config.error("groups.k", f"{k} clusters asked for, but the {len(rows)} source samples{where} "
                               "cannot fill them", value=k)
        found = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x[rows])
        base = 0 if label is None else label * k
        ids[rows] = base + found
        for j in range(k):
            name = f"cluster {j}" if label is None else f"{class_names[label]} / cluster {j}"
            groups[base + j] = Group(base + j, name, {"cluster": j} if label is None else
                                     {"class": class_names[label], "cluster": j})
    present = set(ids[ids >= 0].tolist())
    return Grouping("kmeans", torch.from_numpy(ids), {g: v for g, v in groups.items() if g in present})


def _resolve_key(config: JobConfig[ProjectSchema], where: str, name: str, available: Sequence[str]) -> str:
    """A ``group_by`` / ``bins`` name as a metadata key: ``environment``, ``object``, an exact ``render_args``
    key, or the unique key ending in ``.name``."""
    if name in RENDER_KEYS or name in available:
        return name
    tails = [k for k in available if k.endswith("." + name)]
    if len(tails) == 1:
        return tails[0]
    listed = ", ".join([*RENDER_KEYS, *available])
    if tails:
        raise config.error(where, f"{name!r} matches several render_args keys ({', '.join(tails)}); write one in full",
                           value=name)
    raise config.error(where, f"unknown group_by key {name!r}; the source has {listed}", value=name)


def _values(key: str, meta: Sequence[RenderMeta]) -> list[Any]:
    if key == "environment":
        return [m.environment for m in meta]
    if key == "object":
        return [m.object_uid for m in meta]
    return [m.params.get(key) for m in meta]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _bin_key(config: JobConfig[ProjectSchema], key: str, short: str, values: list[Any], spec: Any,
             where: str) -> tuple[np.ndarray, list[Any], list[str], dict[str, Any]]:
    """``(codes, parts per code, labels per code, description)`` of one numeric key."""
    numbers = np.asarray(values, dtype=np.float64)
    if isinstance(spec, list):
        edges = np.asarray(spec, dtype=np.float64)
        outside = (numbers < edges[0]) | (numbers > edges[-1])
        if outside.any():
            first = float(numbers[outside][0])
            raise config.error(where, f"{int(outside.sum())} source samples have {key} outside the bin edges "
                               f"[{_fmt(edges[0])}, {_fmt(edges[-1])}] (e.g. {_fmt(first)})", value=spec)
        codes = np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, len(edges) - 2)
        counts = np.bincount(codes, minlength=len(edges) - 1)
        empty = [i for i, n in enumerate(counts) if n == 0]
        if empty:
            i = empty[0]
            raise config.error(where, f"bin [{_fmt(edges[i])}, {_fmt(edges[i + 1])}) of {key} holds no source "
                               f"sample: an empty group ({len(empty)} empty bins); choose other edges", value=spec)
        ranges = [[float(a), float(b)] for a, b in zip(edges[:-1], edges[1:])]
        last = len(ranges) - 1
        labels = [f"{short}=[{_fmt(a)}, {_fmt(b)}{']' if i == last else ')'}" for i, (a, b) in enumerate(ranges)]
        return codes, [{"range": r} for r in ranges], labels, {"edges": [float(e) for e in edges]}
    binned = bin_values(key, values, max_distinct=int(spec))
    if binned.edges is not None:
        ranges = [[a, b] for a, b in zip(binned.edges[:-1], binned.edges[1:])]
        return (binned.codes.astype(np.int64), [{"range": r} for r in ranges],
                [f"{short}={label}" for label in binned.labels], {"edges": binned.edges})
    return (binned.codes.astype(np.int64), list(binned.values), [f"{short}={label}" for label in binned.labels],
            {"values": list(binned.values)})


def render_groups(config: JobConfig[ProjectSchema], side: Side) -> Grouping:
    """Groups of distinct (environment, object, binned control values) combinations of the source samples."""
    g = config.schema.groups
    if side.meta is None:
        raise config.error("groups.type", f"render groups need each source sample's render metadata, but "
                           f"{side.dataset.root} is an image-folder tree without it: give source.details: "
                           "(the run directory that rendered it)", value="render")
    available = sorted({k for m in side.meta for k in m.params})
    keys = [_resolve_key(config, f"groups.group_by[{i}]", name, available) for i, name in enumerate(g.group_by or [])]
    bins: dict[str, Any] = {}
    for name, spec in (g.bins or {}).items():
        key = _resolve_key(config, f"groups.bins.{name}", name, available)
        if key not in keys:
            raise config.error(f"groups.bins.{name}", f"{key} is not one of the group_by keys ({', '.join(keys)})",
                               value=spec)
        bins[key] = (name, spec)
    columns: list[np.ndarray] = []
    parts_of: list[list[Any]] = []
    labels_of: list[list[str]] = []
    described: dict[str, dict[str, Any]] = {}
    records = side.records
    for i, key in enumerate(keys):
        where = f"groups.group_by[{i}]"
        values = _values(key, side.meta)
        missing = [records[j].id for j, v in enumerate(values) if v is None]
        if missing:
            raise config.error(where, f"{len(missing)} source samples have no {key} (e.g. {missing[0]!r}) in "
                               f"{side.meta_from}", value=key)
        short = short_key(key, keys)
        numeric = all(_is_number(v) for v in values)
        if key in bins:
            name, spec = bins[key]
            if not numeric:
                raise config.error(f"groups.bins.{name}", f"{key} is not numeric: it cannot be binned", value=spec)
            codes, parts, labels, info = _bin_key(config, key, short, values, spec, f"groups.bins.{name}")
            described[key] = {"bins": spec, **info}
        else:
            distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
            if numeric and len(distinct) > MAX_VALUES:
                raise config.error(where, f"{key} takes {len(distinct)} distinct values: give groups.bins.{short} "
                                   "(a count of equal-width bins or a list of edges)", value=key)
            index = {v: c for c, v in enumerate(distinct)}
            codes = np.asarray([index[v] for v in values], dtype=np.int64)
            parts = distinct
            shown = [Path(str(v)).stem if key == "environment" else v for v in distinct]
            labels = [f"{short}={_fmt(v) if _is_number(v) else v}" for v in shown]
        columns.append(codes)
        parts_of.append(parts)
        labels_of.append(labels)
    combos, ids = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
    groups = {}
    for gid, combo in enumerate(combos):
        labels = tuple(labels_of[j][int(c)] for j, c in enumerate(combo))
        groups[gid] = Group(gid, ", ".join(labels), {keys[j]: parts_of[j][int(c)] for j, c in enumerate(combo)}, labels)
    return Grouping("render", torch.from_numpy(np.asarray(ids, dtype=np.int64).reshape(-1)), groups, keys, described)


def make_groups(config: JobConfig[ProjectSchema], side: Side, features: Optional[torch.Tensor], labels: Sequence[int],
                class_names: Sequence[str], *, within_class: bool) -> Grouping:
    """The grouping ``groups.type`` asks for; ``labels`` are the source samples' classes as indices into
    the target's ``class_names`` (``-1``: a class the target lacks); ``features`` are needed for kmeans only."""
    kind = config.schema.groups.type
    if kind == "labels":
        return label_groups(side)
    if kind == "kmeans":
        assert features is not None
        return kmeans_groups(config, features, labels, class_names, within_class=within_class,
                             seed=config.schema.seed)
    return render_groups(config, side)


def small_groups(ids: torch.Tensor, pools: dict[Optional[int], torch.Tensor]) -> dict[Optional[int], list[tuple[int, int]]]:
    """Per pool (a target class, or ``None``), the ``(group id, samples)`` of its groups with fewer than 2."""
    out: dict[Optional[int], list[tuple[int, int]]] = {}
    for label, pool in pools.items():
        values, counts = torch.unique(ids[pool], return_counts=True)
        few = [(int(v), int(n)) for v, n in zip(values, counts) if v >= 0 and n < 2]
        if few:
            out[label] = few
    return out


__all__ = ["Group", "Grouping", "MAX_VALUES", "kmeans_groups", "label_groups", "make_groups", "render_groups",
           "short_key", "small_groups"]
