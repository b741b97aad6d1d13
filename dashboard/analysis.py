"""Server-side aggregations of a run: heat maps, image selections, failure modes, per-object and
per-environment analysis, and run comparison.

Accuracy everywhere is ``correct / evaluated``: a row is *evaluated* when its job succeeded and has an
``is_correct`` verdict. Failed jobs (``status: "failed"``) are counted apart (``failed``), never as wrong.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from threedb.sim.binning import Binned, bin_values
from threedb.dashboard.loader import Run, class_index
from threedb.dashboard.responses import json_safe
from threedb.sim.errors import ThreeDBError


class QueryError(ThreeDBError):
    """A request names an unknown parameter, bin or run; the message says which."""


class Snapshot:
    """Arrays over a run's rows at one version, with binned parameters computed on demand."""

    def __init__(self, run: Run) -> None:
        with run._lock:
            self.run = run
            self.version = run.version
            self.n = len(run)
            self.ids = run.ids[: self.n]
            # 1 correct, 0 wrong, -1 no verdict (failed job or missing is_correct)
            self.verdict = np.array([-1 if c is None else int(c) for c in run.correct[: self.n]], dtype=np.int8)
            self.failed = np.array(run.failed[: self.n], dtype=bool)
            self.models = list(run.models[: self.n])
            self.envs = list(run.environments[: self.n])
            # sorted distinct names and each row's code into them
            self.model_names, self.model_codes = _encode(self.models)
            self.env_names, self.env_codes = _encode(self.envs)
            self.columns = {k: v[: self.n] for k, v in run.params.items()}
        self._bins: dict[str, Binned] = {}
        self._lock = threading.Lock()

    @property
    def param_names(self) -> list[str]:
        return list(self.columns)  # model, environment, then render arguments in log order

    def bins(self, name: str) -> Binned:
        if name not in self.columns:
            raise QueryError(f"unknown parameter {name!r} in run {self.run.name!r} "
                             f"(known: {', '.join(self.param_names)})")
        with self._lock:
            if name not in self._bins:
                self._bins[name] = bin_values(name, self.columns[name])
            return self._bins[name]

    def mask(self, filters: Mapping[str, int]) -> np.ndarray:
        """Rows whose parameter ``p`` falls in bin ``filters[p]`` for every filter."""
        keep = np.ones(self.n, dtype=bool)
        for name, code in filters.items():
            b = self.bins(name)
            if not 0 <= code < len(b.labels):
                raise QueryError(f"parameter {name!r} has no bin {code} (it has {len(b.labels)})")
            keep &= b.codes == code
        return keep


def _encode(values: list[str]) -> tuple[list[str], np.ndarray]:
    if not values:
        return [], np.zeros(0, dtype=np.int64)
    names, codes = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)
    return names.tolist(), codes.astype(np.int64)


_cache: dict[int, Snapshot] = {}
_cache_lock = threading.Lock()


def snapshot(run: Run) -> Snapshot:
    """The run's current snapshot (refreshing the run first; reused while no rows were added)."""
    run.refresh()
    with _cache_lock:
        snap = _cache.get(id(run))
        if snap is None or snap.version != run.version or snap.run is not run:
            snap = _cache[id(run)] = Snapshot(run)
        return snap


def stats(verdict: np.ndarray, failed: np.ndarray) -> dict[str, Any]:
    """Evaluated rows ``n``, ``correct``, ``failed`` jobs and ``accuracy`` (None when nothing was evaluated)."""
    evaluated = int((verdict >= 0).sum())
    correct = int((verdict == 1).sum())
    return {"n": evaluated, "correct": correct, "failed": int(failed.sum()),
            "accuracy": correct / evaluated if evaluated else None}


def control_of(param: str) -> str:
    """The control a parameter belongs to: ``render_args.Class.p`` -> ``Class``; model/environment themselves."""
    if param.startswith("render_args."):
        return param[len("render_args."):].rpartition(".")[0] or param
    return param


# -- parameters and heat maps ------------------------------------------------------------------------
def parameters(snap: Snapshot) -> list[dict[str, Any]]:
    return [snap.bins(name).describe() for name in snap.param_names]


def heatmap(snap: Snapshot, x: str | None, y: str | None, fixed: Mapping[str, int]) -> dict[str, Any]:
    """Accuracy and counts per (x bin, y bin) over the rows in the ``fixed`` bins (sliders); every other
    parameter is pooled. ``cells[j][i]`` is row ``j`` of y, column ``i`` of x."""
    if x is not None and x == y:
        raise QueryError(f"the two heat-map axes must differ (both are {x!r})")
    if x in fixed or y in fixed:
        raise QueryError("a heat-map axis cannot also be fixed by a slider")
    keep = snap.mask(fixed)
    bx = snap.bins(x) if x else None
    by = snap.bins(y) if y else None
    nx, ny = (len(bx.labels) if bx else 1), (len(by.labels) if by else 1)
    cx = bx.codes if bx else np.zeros(snap.n, dtype=np.int32)
    cy = by.codes if by else np.zeros(snap.n, dtype=np.int32)
    keep = keep & (cx >= 0) & (cy >= 0)
    flat = (cy * nx + cx)[keep]
    v, f = snap.verdict[keep], snap.failed[keep]
    size = nx * ny
    n = np.bincount(flat[v >= 0], minlength=size)
    correct = np.bincount(flat[v == 1], minlength=size)
    failed = np.bincount(flat[f], minlength=size)
    cells = [[{"n": int(n[j * nx + i]), "correct": int(correct[j * nx + i]), "failed": int(failed[j * nx + i]),
               "accuracy": (float(correct[j * nx + i] / n[j * nx + i]) if n[j * nx + i] else None)}
              for i in range(nx)] for j in range(ny)]
    return {"run": snap.run.index, "version": snap.version, "rows": snap.n,
            "x": bx.describe() if bx else None, "y": by.describe() if by else None,
            "fixed": dict(fixed), "cells": cells, "total": stats(v, f)}


def select(snap: Snapshot, filters: Mapping[str, int], outcome: str = "all", page: int = 0,
           per_page: int = 24) -> dict[str, Any]:
    """One page of the rows in the given bins (``outcome``: all, correct, wrong or failed), with what
    the image grid shows: verdict, predicted and true labels, boxes (detection)."""
    keep = snap.mask(filters)
    if outcome == "correct":
        keep &= snap.verdict == 1
    elif outcome == "wrong":
        keep &= snap.verdict == 0
    elif outcome == "failed":
        keep &= snap.failed
    elif outcome != "all":
        raise QueryError(f"outcome must be all, correct, wrong or failed, not {outcome!r}")
    if page < 0 or not 1 <= per_page <= 500:
        raise QueryError("page must be >= 0 and per_page within 1..500")
    rows = np.flatnonzero(keep)
    chosen = rows[page * per_page:(page + 1) * per_page]
    return {"run": snap.run.index, "version": snap.version, "total": int(len(rows)), "page": page,
            "per_page": per_page, "items": items(snap.run, chosen.tolist())}


def _box(box: Any) -> list[float] | None:
    """A logged detection ``[x1, y1, x2, y2, score, class]`` with finite numbers and a score >= 0, else None
    (padding rows are -1; anything else a log holds is not drawn)."""
    if not isinstance(box, list) or len(box) < 6:
        return None
    values = box[:6]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(float(v)) for v in values):
        return None
    return [float(v) for v in values] if values[4] >= 0 else None


def items(run: Run, indices: Sequence[int]) -> list[dict[str, Any]]:
    """Grid items of some rows (their lines re-read from details.log)."""
    out = []
    for i, row in zip(indices, run.rows(indices)):
        prediction = row.get("prediction")
        top = prediction if isinstance(prediction, list) else ([] if prediction is None else [prediction])
        boxes = []
        raw_boxes = row.get("boxes")
        for box in map(_box, raw_boxes if isinstance(raw_boxes, list) else []):
            if box is not None:
                boxes.append({"box": box[:4], "score": box[4], "label": run.class_name(class_index(box[5]))})
        render_args = row.get("render_args")
        out.append({
            "id": run.ids[i], "correct": run.correct[i], "failed": run.failed[i],
            "error": json_safe(row.get("error")), "model": run.models[i], "environment": run.environments[i],
            "predicted": [run.class_name(k) for k in map(class_index, top) if k is not None],
            "true": run.true_labels(run.uids[i]) or [run.uids[i]],
            "boxes": boxes, "render_args": json_safe(render_args) if isinstance(render_args, dict) else {},
            "passes": [p for p in ("rgb", "mask", "uv") if run.pass_path(run.ids[i], p) is not None],
        })
    return out


# -- failure modes -------------------------------------------------------------------------------------
#: How regions are ranked (``rank=``). Among hundreds of small regions some are at 0 % by chance alone,
#: so the default ranks by the *upper* end of a Wilson interval: a region comes first when even its
#: optimistic accuracy is low, which needs both a low rate and enough rows to be sure of it.
RANKS = {
    "wilson": "upper end of the 95 % Wilson interval of the region's accuracy (lowest first)",
    "test": "one-sided binomial test of the region's accuracy against the overall accuracy, "
            "Benjamini-Hochberg adjusted over all regions ranked (lowest q first)",
    "accuracy": "the region's accuracy alone (lowest first; small regions at 0 % by chance come first)",
}
DEFAULT_RANK = "wilson"
CONFIDENCE = 0.95   # of the Wilson intervals
FDR = 0.05          # false discovery rate under which a tested region is marked significant


def _region_statistics(n: np.ndarray, c: np.ndarray, p0: float | None) -> dict[str, np.ndarray]:
    """Wilson interval, one-sided binomial p-value against ``p0`` (accuracy lower than the overall) and its
    Benjamini-Hochberg q-value, for regions of ``n`` evaluated rows of which ``c`` correct."""
    from scipy import stats
    from statsmodels.stats.proportion import proportion_confint

    if not len(n):
        empty = np.zeros(0)
        return {"lo": empty, "hi": empty, "p": empty, "q": empty}
    lo, hi = proportion_confint(c, n, alpha=1 - CONFIDENCE, method="wilson")
    p = stats.binom.cdf(c, n, p0) if p0 is not None else np.ones(len(n))
    q = stats.false_discovery_control(np.clip(p, 0.0, 1.0), method="bh")
    return {"lo": np.asarray(lo, dtype=np.float64), "hi": np.asarray(hi, dtype=np.float64), "p": p, "q": q}


def failure_modes(snap: Snapshot, min_count: int = 5, top: int = 10, examples: int = 4,
                  rank: str = DEFAULT_RANK) -> dict[str, Any]:
    """Parameter regions (one bin of one parameter, or bins of two parameters of one control) and
    control compositions (bins of parameters of two different controls) with at least ``min_count``
    evaluated rows, ranked by ``rank`` (one of :data:`RANKS`; ties: lower accuracy, then more rows),
    each with its Wilson interval, p-value and q-value."""
    if rank not in RANKS:
        raise QueryError(f"rank must be one of {', '.join(RANKS)}, not {rank!r}")
    names = [p for p in snap.param_names if len(snap.bins(p).labels) > 1]
    found: list[tuple[tuple[str, ...], tuple[int, ...]]] = []
    counts: list[np.ndarray] = []
    evaluated = snap.verdict >= 0
    correct = snap.verdict == 1
    overall = stats(snap.verdict, snap.failed)

    def collect(params: tuple[str, ...], codes: np.ndarray, sizes: tuple[int, ...]) -> None:
        size = int(np.prod(sizes))
        ok = codes >= 0
        n = np.bincount(codes[ok & evaluated], minlength=size)
        c = np.bincount(codes[ok & correct], minlength=size)
        flat = np.flatnonzero(n >= min_count)
        found.extend((params, tuple(int(b) for b in np.unravel_index(f, sizes))) for f in flat.tolist())
        counts.append(np.stack([n[flat], c[flat]]))

    for p in names:
        b = snap.bins(p)
        collect((p,), b.codes, (len(b.labels),))
    for p, q in itertools.combinations(names, 2):
        bp, bq = snap.bins(p), snap.bins(q)
        codes = np.where((bp.codes >= 0) & (bq.codes >= 0), bp.codes * len(bq.labels) + bq.codes, -1)
        collect((p, q), codes, (len(bp.labels), len(bq.labels)))
    n, c = np.concatenate(counts, axis=1) if counts else np.zeros((2, 0), dtype=np.int64)
    accuracy = c / np.maximum(n, 1)
    st = _region_statistics(n, c, overall["accuracy"])
    key = {"wilson": st["hi"], "test": st["q"], "accuracy": accuracy}[rank]
    order = np.lexsort((-n, accuracy, key))[:top]   # last key sorts first
    ranked = []
    for k in order.tolist():
        params, bins = found[k]
        kind = "composition" if len({control_of(p) for p in params}) > 1 else "region"
        keep = snap.mask(dict(zip(params, bins))) & (snap.verdict == 0)
        ranked.append({"kind": kind, "params": list(params), "bins": list(bins),
                       "labels": [snap.bins(p).labels[b] for p, b in zip(params, bins)],
                       "n": int(n[k]), "correct": int(c[k]), "accuracy": float(accuracy[k]),
                       "interval": [float(st["lo"][k]), float(st["hi"][k])],
                       "p_value": float(st["p"][k]), "q_value": float(st["q"][k]),
                       "significant": bool(st["q"][k] <= FDR),
                       "examples": [snap.ids[i] for i in np.flatnonzero(keep)[:examples]]})
    return {"run": snap.run.index, "version": snap.version, "overall": overall, "min_count": min_count,
            "rank": rank, "ranks": RANKS, "confidence": CONFIDENCE, "fdr": FDR, "regions": len(found),
            "modes": ranked}


# -- per object ------------------------------------------------------------------------------------------
def objects(snap: Snapshot, max_classes: int = 12) -> dict[str, Any]:
    """Accuracy per object (model), accuracy curves of each object over the bins of each parameter that
    varies (two bins or more), and the confusion between objects and predicted (top-1) classes."""
    models, mcodes = snap.model_names, snap.model_codes
    per = []
    for k, m in enumerate(models):
        sel = mcodes == k
        per.append({"model": m, **stats(snap.verdict[sel], snap.failed[sel])})
    curves = {}
    for p in snap.param_names:
        if p == "model":
            continue
        b = snap.bins(p)
        if len(b.labels) < 2:
            continue   # a fixed parameter: a "curve" of one point says nothing
        series = {}
        for k, m in enumerate(models):
            sel = (mcodes == k) & (b.codes >= 0)
            n = np.bincount(b.codes[sel & (snap.verdict >= 0)], minlength=len(b.labels))
            c = np.bincount(b.codes[sel & (snap.verdict == 1)], minlength=len(b.labels))
            series[m] = [{"n": int(a), "accuracy": (float(cc / a) if a else None)} for a, cc in zip(n, c)]
        curves[p] = {"labels": b.labels, "series": series}
    top1 = snap.run.top1[: snap.n]
    counts: dict[str, int] = {}
    for t, v in zip(top1, snap.verdict):
        if t is not None and v >= 0:
            name = snap.run.class_name(t) or str(t)
            counts[name] = counts.get(name, 0) + 1
    classes = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_classes]]
    other = len(counts) > len(classes)
    columns = classes + (["(other)"] if other else [])
    col = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(columns) for _ in models]
    for t, v, k in zip(top1, snap.verdict, mcodes):
        if t is None or v < 0:
            continue
        name = snap.run.class_name(t) or str(t)
        matrix[k][col.get(name, len(columns) - 1)] += 1
    return {"run": snap.run.index, "version": snap.version, "objects": per, "curves": curves,
            "confusion": {"rows": models, "columns": columns, "counts": matrix}}


# -- per environment --------------------------------------------------------------------------------------
def _five(values: list[float]) -> dict[str, Any]:
    a = np.array(values, dtype=np.float64)
    q = np.quantile(a, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist() if len(a) else [None] * 5
    return dict(zip(("min", "q1", "median", "q3", "max"), q))


def environments(snap: Snapshot) -> dict[str, Any]:
    """Per environment: accuracy, and the spread of per-object accuracies (a box plot over objects)."""
    out = []
    for e, env in enumerate(snap.env_names):
        in_env = snap.env_codes == e
        points = []
        for m in np.unique(snap.model_codes[in_env]).tolist():
            sel = in_env & (snap.model_codes == m)
            s = stats(snap.verdict[sel], snap.failed[sel])
            if s["accuracy"] is not None:
                points.append({"model": snap.model_names[m], "accuracy": s["accuracy"], "n": s["n"]})
        out.append({"environment": env, **stats(snap.verdict[in_env], snap.failed[in_env]),
                    "objects": points, "box": _five([p["accuracy"] for p in points])})
    return {"run": snap.run.index, "version": snap.version, "environments": out}


# -- comparison -----------------------------------------------------------------------------------------
def compare(a: Snapshot, b: Snapshot, param: str | None) -> dict[str, Any]:
    """Two runs joined by job id (rows with a verdict in both): overall and per-bin accuracy of each
    (bins of ``param`` computed on run A), agreement counts and examples where they disagree."""
    index_b = {job: i for i, job in enumerate(b.ids)}
    pairs = [(i, index_b[job]) for i, job in enumerate(a.ids) if job in index_b]
    ia = np.array([p[0] for p in pairs], dtype=np.int64)
    ib = np.array([p[1] for p in pairs], dtype=np.int64)
    va = a.verdict[ia] if len(ia) else np.zeros(0, np.int8)
    vb = b.verdict[ib] if len(ib) else np.zeros(0, np.int8)
    both = (va >= 0) & (vb >= 0)
    ia, ib, va, vb = ia[both], ib[both], va[both], vb[both]
    out: dict[str, Any] = {
        "a": a.run.index, "b": b.run.index, "joined": int(len(ia)),
        "accuracy_a": float(va.mean()) if len(va) else None, "accuracy_b": float(vb.mean()) if len(vb) else None,
        "agreement": {"both_correct": int(((va == 1) & (vb == 1)).sum()), "only_a": int(((va == 1) & (vb == 0)).sum()),
                      "only_b": int(((va == 0) & (vb == 1)).sum()), "both_wrong": int(((va == 0) & (vb == 0)).sum())},
        "disagree": [{"id": a.ids[i], "a": bool(x), "b": bool(y)}
                     for i, x, y in zip(ia[va != vb][:12].tolist(), va[va != vb], vb[va != vb])],
    }
    if param is not None:
        bins = a.bins(param)
        codes = bins.codes[ia]
        rows = []
        for k, label in enumerate(bins.labels):
            sel = codes == k
            n = int(sel.sum())
            rows.append({"label": label, "n": n,
                         "accuracy_a": float(va[sel].mean()) if n else None,
                         "accuracy_b": float(vb[sel].mean()) if n else None})
        out["param"] = param
        out["bins"] = rows
    return out
