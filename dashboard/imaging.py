"""Analyses that read the logged images: background complexity vs accuracy, and the surface heat map.

Both cache a small per-image result (a float; a bit set of UV cells) on the run, keyed by job id,
so a live run only reads its new images. Each looks at most ``sample`` rows, evenly spaced over the
run, so a 100k-row run stays interactive.

*Background complexity* of an image: the fraction of Canny edge pixels (OpenCV, thresholds 100/200
on the grey image) among the pixels outside the object mask (``images/<id>_mask.png``; the whole image
when the run kept no mask). Busy backgrounds score high, flat ones near 0.

*Surface heat map*: the object's UV square is cut into ``grid x grid`` cells. A row *sees* a cell
when some pixel of its ``uv`` pass (``images/<id>_uv.exr``, NaN off the object) inside the object
mask falls in it. Per cell: accuracy over the rows that see it. Painted as an image: v up, as in a
texture; red 0 % -> green 100 %; grey where no row sees the cell.
"""
from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from threedb.dashboard.analysis import QueryError, Snapshot
from threedb.dashboard.loader import Run

GRID = 32
_lock = threading.Lock()


def _cache(run: Run, name: str) -> dict[str, Any]:
    with _lock:
        caches = run.__dict__.setdefault("_image_caches", {})
        return caches.setdefault(name, {})


def _sample(indices: np.ndarray, sample: int) -> np.ndarray:
    if len(indices) <= sample:
        return indices
    return indices[np.linspace(0, len(indices) - 1, sample).round().astype(np.int64)]


def _mask(run: Run, job_id: str, shape: tuple[int, int]) -> np.ndarray | None:
    path = run.pass_path(job_id, "mask")
    if path is None:
        return None
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return None if mask is None or mask.shape != shape else mask > 0


def edge_density(run: Run, job_id: str) -> float | None:
    """Background complexity of one logged image (see the module docstring); None without an image."""
    path = run.pass_path(job_id, "rgb")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path else None
    if image is None:
        return None
    edges = cv2.Canny(image, 100, 200) > 0
    mask = _mask(run, job_id, image.shape)
    background = ~mask if mask is not None else np.ones_like(edges)
    total = int(background.sum())
    return float(edges[background].sum() / total) if total else 0.0


def complexity(snap: Snapshot, sample: int = 2000, bins: int = 5) -> dict[str, Any]:
    """Background complexity vs accuracy: per-image points, accuracy in ``bins`` equal-count bins of
    complexity, and the correlation between complexity and correctness."""
    cache = _cache(snap.run, "complexity")
    points = []
    for i in _sample(np.flatnonzero(snap.verdict >= 0), sample).tolist():
        job = snap.ids[i]
        if job not in cache:
            cache[job] = edge_density(snap.run, job)
        if cache[job] is not None:
            points.append({"id": job, "complexity": cache[job], "correct": bool(snap.verdict[i])})
    points.sort(key=lambda p: p["complexity"])
    binned = []
    for chunk in np.array_split(np.arange(len(points)), min(bins, len(points))) if points else []:
        sel = [points[k] for k in chunk.tolist()]
        binned.append({"lo": sel[0]["complexity"], "hi": sel[-1]["complexity"], "n": len(sel),
                       "mean": float(np.mean([p["complexity"] for p in sel])),
                       "accuracy": float(np.mean([p["correct"] for p in sel]))})
    corr = None
    if len(points) > 2:
        x = np.array([p["complexity"] for p in points])
        y = np.array([p["correct"] for p in points], dtype=np.float64)
        if x.std() > 0 and y.std() > 0:
            corr = float(np.corrcoef(x, y)[0, 1])
    return {"run": snap.run.index, "version": snap.version, "measure": "Canny edge density outside the object mask",
            "points": points, "bins": binned, "correlation": corr}


def visible_cells(run: Run, job_id: str, grid: int = GRID) -> np.ndarray | None:
    """Bool ``grid x grid`` array (row 0 = top = v near 1) of the UV cells a row sees; None without a uv pass."""
    path = run.pass_path(job_id, "uv")
    if path is None:
        return None
    from threedb.sim.render.files import read_exr

    channels = read_exr(path)
    u = next((v for k, v in channels.items() if k.split(".")[-1] in ("U", "R")), None)
    v = next((v for k, v in channels.items() if k.split(".")[-1] in ("V", "G")), None)
    if u is None or v is None:
        return None
    valid = np.isfinite(u) & np.isfinite(v)
    mask = _mask(run, job_id, u.shape)
    if mask is not None:
        valid &= mask
    cols = np.clip((u[valid] * grid).astype(np.int64), 0, grid - 1)
    rows = grid - 1 - np.clip((v[valid] * grid).astype(np.int64), 0, grid - 1)
    seen = np.zeros((grid, grid), dtype=bool)
    seen[rows, cols] = True
    return seen


def surface(snap: Snapshot, model: str | None, sample: int = 3000, grid: int = GRID) -> dict[str, Any]:
    """Per-UV-cell accuracy of one object (``model``; the first with uv passes when None)."""
    if model is not None and model not in snap.model_names:
        raise QueryError(f"unknown object {model!r} in run {snap.run.name!r} (known: {', '.join(snap.model_names)})")
    cache = _cache(snap.run, f"surface{grid}")
    seen = np.zeros((grid, grid), dtype=np.int64)
    correct = np.zeros((grid, grid), dtype=np.int64)
    used = 0
    for name in ([model] if model else snap.model_names):
        code = snap.model_names.index(name)
        rows = np.flatnonzero((snap.model_codes == code) & (snap.verdict >= 0))
        for i in _sample(rows, sample).tolist():
            job = snap.ids[i]
            if job not in cache:
                cells = visible_cells(snap.run, job, grid)
                cache[job] = None if cells is None else np.packbits(cells)
            if cache[job] is None:
                continue
            cells = np.unpackbits(cache[job])[: grid * grid].reshape(grid, grid).astype(bool)
            seen += cells
            correct += cells * int(snap.verdict[i])
            used += 1
        if used:
            model = name
            break
    accuracy = np.where(seen > 0, correct / np.maximum(seen, 1), np.nan)
    return {"run": snap.run.index, "version": snap.version, "model": model if used else None, "grid": grid,
            "rows": used, "seen": seen.tolist(),
            "accuracy": [[None if np.isnan(a) else float(a) for a in r] for r in accuracy]}


def surface_png(result: dict[str, Any], size: int = 256) -> bytes:
    """The surface heat map as a PNG: red (0 %) to green (100 %), grey where unseen."""
    grid = result["grid"]
    acc = np.array([[np.nan if a is None else a for a in r] for r in result["accuracy"]], dtype=np.float64)
    rgb = np.full((grid, grid, 3), 128, dtype=np.uint8)
    ok = ~np.isnan(acc)
    rgb[ok, 0] = (220 * (1 - acc[ok]) + 20).astype(np.uint8)
    rgb[ok, 1] = (180 * acc[ok] + 40).astype(np.uint8)
    rgb[ok, 2] = 40
    big = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_NEAREST)
    ok_png, data = cv2.imencode(".png", big[..., ::-1])
    if not ok_png:
        raise RuntimeError("cannot encode the surface heat map")
    return data.tobytes()


def uv_png(path: Any) -> bytes:
    """A uv pass as a false-colour PNG (U red, V green, black off the object) for the browser."""
    from threedb.sim.render.files import read_exr

    channels = read_exr(path)
    u = next((v for k, v in channels.items() if k.split(".")[-1] in ("U", "R")), None)
    v = next((v for k, v in channels.items() if k.split(".")[-1] in ("V", "G")), None)
    if u is None or v is None:
        raise QueryError(f"{path}: no U/V channels")
    rgb = np.zeros((*u.shape, 3), dtype=np.uint8)
    ok = np.isfinite(u) & np.isfinite(v)
    rgb[ok, 0] = (np.clip(u[ok], 0, 1) * 255).astype(np.uint8)
    rgb[ok, 1] = (np.clip(v[ok], 0, 1) * 255).astype(np.uint8)
    ok_png, data = cv2.imencode(".png", rgb[..., ::-1])
    if not ok_png:
        raise RuntimeError(f"cannot encode {path} as PNG")
    return data.tobytes()
