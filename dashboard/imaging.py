"""Analyses that read the logged images: background complexity vs accuracy, and the surface heat map.

Both cache a small per-image result (a float; a bit set of UV cells) on the run, keyed by job id,
so a live run only reads its new images. Each looks at most ``sample`` rows, evenly spaced over the
run, so a 100k-row run stays interactive.

*Background complexity* of an image: the fraction of Canny edge pixels (OpenCV, thresholds 100/200
on the grey image) among the pixels outside the object mask (``images/<id>_mask.png``; the whole image
when the run kept no mask, and the view then says so). Busy backgrounds score high, flat ones near 0.

*Surface heat map*: the object's UV square is cut into ``grid x grid`` cells. A row *sees* a cell
when some pixel of its ``uv`` pass (``images/<id>_uv.exr``, NaN off the object) inside the object
mask falls in it. Per cell: accuracy over the rows that see it. Painted as an image: v up, as in a
texture; red 0 % -> green 100 %; grey where no row sees the cell.

Files are read through :mod:`threedb.dashboard.files` (regular files inside the run only, the pixel
count checked from the header before decoding); an image refused or unreadable is skipped and counted
by reason. At most :data:`DECODERS` images are decoded at once, whatever the number of requests, so
memory stays bounded (measured: a 194 MB peak for one noisy image of
:data:`~threedb.dashboard.files.MAX_PIXELS` pixels with its mask).
"""
from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from threedb.dashboard import files
from threedb.dashboard.analysis import QueryError, Snapshot
from threedb.dashboard.loader import Run

GRID = 32
DECODERS = 2
_lock = threading.Lock()
_decoding = threading.BoundedSemaphore(DECODERS)


class Skipped(Exception):
    """An image of a row that an analysis leaves out; the message is the reason it is counted under."""


def _cache(run: Run, name: str) -> dict[str, Any]:
    with _lock:
        caches = run.__dict__.setdefault("_image_caches", {})
        return caches.setdefault(name, {})


def _sample(indices: np.ndarray, sample: int) -> np.ndarray:
    if len(indices) <= sample:
        return indices
    return indices[np.linspace(0, len(indices) - 1, sample).round().astype(np.int64)]


def _read(run: Run, job_id: str, name: str) -> tuple[bytes, str] | None:
    """Checked bytes and file name of a row's pass; None when not logged; Skipped when refused."""
    try:
        path = run.pass_file(job_id, name)
        data = files.read_inside(run.path, path) if path is not None else None
    except files.Refused as exc:
        raise Skipped(exc.reason) from None
    return None if data is None else (data, path.name)


def _png(data: bytes, name: str, flags: int) -> np.ndarray:
    try:
        image = files.decode_png(data, name, flags)
    except files.Refused as exc:
        raise Skipped(exc.reason) from None
    if image is None:
        raise Skipped(files.UNREADABLE)
    return image


def _mask(run: Run, job_id: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The row's object mask as bools when logged and of ``shape``, else None."""
    found = _read(run, job_id, "mask")
    if found is None:
        return None
    mask = _png(*found, cv2.IMREAD_GRAYSCALE)
    return mask > 0 if mask.shape == shape else None


def edge_density(run: Run, job_id: str) -> tuple[float, bool] | None:
    """Background complexity of one logged image (see the module docstring) and whether an object mask
    was used; None without an image; Skipped (the reason) when the image is refused or unreadable."""
    with _decoding:   # the file's bytes too: memory is bounded by DECODERS, not by the number of requests
        found = _read(run, job_id, "rgb")
        if found is None:
            return None
        image = _png(*found, cv2.IMREAD_GRAYSCALE)
        edges = cv2.Canny(image, 100, 200) > 0
        mask = _mask(run, job_id, image.shape)
    background = ~mask if mask is not None else np.ones_like(edges)
    total = int(background.sum())
    return (float(edges[background].sum() / total) if total else 0.0), mask is not None


def _measure(masked: int, total: int) -> str:
    if not total:
        return "Canny edge density (no images to measure)"
    if masked == total:
        return "Canny edge density outside the object mask"
    if not masked:
        return ("Canny edge density over the whole image (no object masks logged: add mask to "
                "logging.extra_passes to measure the background only)")
    return f"Canny edge density outside the object mask ({total - masked} of {total} images without a mask: whole image)"


def complexity(snap: Snapshot, sample: int = 2000, bins: int = 5) -> dict[str, Any]:
    """Background complexity vs accuracy: per-image points, accuracy in ``bins`` equal-count bins of
    complexity, and the correlation between complexity and correctness."""
    cache = _cache(snap.run, "complexity")
    points = []
    skipped: dict[str, int] = {}
    masked = 0
    for i in _sample(np.flatnonzero(snap.verdict >= 0), sample).tolist():
        job = snap.ids[i]
        if job not in cache:
            try:
                cache[job] = edge_density(snap.run, job)
            except Skipped as exc:
                cache[job] = str(exc)
        result = cache[job]
        if isinstance(result, str):
            skipped[result] = skipped.get(result, 0) + 1
        elif result is not None:
            masked += result[1]
            points.append({"id": job, "complexity": result[0], "correct": bool(snap.verdict[i])})
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
    return {"run": snap.run.index, "version": snap.version, "measure": _measure(masked, len(points)),
            "masked": masked, "skipped": skipped, "points": points, "bins": binned, "correlation": corr}


def _channels(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The U and V channels of a uv pass; Refused when it is refused or has none."""
    channels = files.decode_exr(data, name)
    u = next((v for k, v in channels.items() if k.split(".")[-1] in ("U", "R")), None)
    v = next((v for k, v in channels.items() if k.split(".")[-1] in ("V", "G")), None)
    if u is None or v is None or u.shape != v.shape or u.ndim != 2:
        raise files.Refused(f"{name}: no U/V channels", files.UNREADABLE)
    return u, v


def _uv(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return _channels(data, name)
    except files.Refused as exc:
        raise Skipped(exc.reason) from None


def visible_cells(run: Run, job_id: str, grid: int = GRID) -> np.ndarray | None:
    """Bool ``grid x grid`` array (row 0 = top = v near 1) of the UV cells a row sees; None without a uv
    pass; Skipped (the reason) when it is refused or unreadable."""
    with _decoding:
        found = _read(run, job_id, "uv")
        if found is None:
            return None
        u, v = _uv(*found)
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
    skipped: dict[str, int] = {}
    for name in ([model] if model else snap.model_names):
        code = snap.model_names.index(name)
        rows = np.flatnonzero((snap.model_codes == code) & (snap.verdict >= 0))
        for i in _sample(rows, sample).tolist():
            job = snap.ids[i]
            if job not in cache:
                try:
                    cells = visible_cells(snap.run, job, grid)
                    cache[job] = None if cells is None else np.packbits(cells)
                except Skipped as exc:
                    cache[job] = str(exc)
            if isinstance(cache[job], str):
                skipped[cache[job]] = skipped.get(cache[job], 0) + 1
                continue
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
    out = {"run": snap.run.index, "version": snap.version, "model": model if used else None, "grid": grid,
           "rows": used, "skipped": skipped, "seen": seen.tolist(),
           "accuracy": [[None if np.isnan(a) else float(a) for a in r] for r in accuracy]}
    if not used:
        out["missing"] = passes_hint(snap.run)
    return out


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


def uv_png(data: bytes, name: str) -> bytes:
    """A uv pass (checked bytes of the EXR) as a false-colour PNG (U red, V green, black off the object)."""
    with _decoding:
        u, v = _channels(data, name)
    rgb = np.zeros((*u.shape, 3), dtype=np.uint8)
    ok = np.isfinite(u) & np.isfinite(v)
    rgb[ok, 0] = (np.clip(u[ok], 0, 1) * 255).astype(np.uint8)
    rgb[ok, 1] = (np.clip(v[ok], 0, 1) * 255).astype(np.uint8)
    ok_png, data = cv2.imencode(".png", rgb[..., ::-1])
    if not ok_png:
        raise RuntimeError(f"cannot encode {name} as PNG")
    return data.tobytes()


def passes_hint(run: Run) -> str:
    """Why a run has no uv passes to paint, from its resolved config: what to change in the config."""
    config = run.config
    render, logging = config.get("render"), config.get("logging")
    rendered = render.get("passes") if isinstance(render, dict) else None
    kept = logging.get("extra_passes") if isinstance(logging, dict) else None
    if not isinstance(rendered, list):
        return ("No uv passes logged for this object. The surface view needs render.passes and "
                "logging.extra_passes both holding mask and uv.")
    if "uv" not in rendered:
        return ("No uv passes logged: this run did not render them. Add uv (and mask) to render.passes "
                "and to logging.extra_passes.")
    if not isinstance(kept, list) or "uv" not in kept:
        return ("No uv passes logged: uv was rendered (render.passes) but not kept. Add uv (and mask) to "
                "logging.extra_passes.")
    return ("No uv pass files found for this object although logging.extra_passes keeps uv "
            "(images of its jobs missing, refused or failed).")
