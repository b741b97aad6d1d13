"""``threedb companion export``: per logged render, the files needed to recreate it physically.

For each id (see docs/companion.md)::

    OUT/manifest.json            the whole export: ids, files, units, axes, source run, versions
    OUT/<id>/render.png          the re-rendered image (what the model saw; checked against the run's)
    OUT/<id>/overlay.png         RGBA edge overlay (object silhouette + occluding contours), transparent
    OUT/<id>/mask.png            the object mask (0/255)
    OUT/<id>/pose.json           intrinsics, camera and object poses in metres (documented axes)
    OUT/<id>/object.usdz         the normalised object in its rendered pose, metres, Y-up (AR Quick Look)

Jobs are re-rendered (deterministic per job seed) in a :class:`~threedb.sim.render.process.RenderProcess`
from the run's ``config.resolved.yaml`` and the row; ``details.log`` is left unchanged. Ids are checked
against ``details.log`` before anything is joined into a path.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from threedb.companion.geometry import Z_UP_TO_Y_UP, pose_record
from threedb.companion.overlay import edge_overlay, write_rgba_png
from threedb.companion.source import ExportError, RunSource, check_id_text
from threedb.companion.usdz import export_usdz

MANIFEST = "manifest.json"
FORMAT = "threedb-companion"
FORMAT_VERSION = 1
#: Files of one id, relative to ``OUT/<id>/``.
FILES = {"render": "render.png", "overlay": "overlay.png", "mask": "mask.png", "pose": "pose.json",
         "usdz": "object.usdz"}
#: A re-rendered pose differing from the USD scene's by more than this (metres / unitless) is an error.
POSE_TOLERANCE = 1e-4

FILE_DOCS = {
    "render": "RGB PNG, the re-rendered image after image controls (what the model saw)",
    "overlay": "RGBA PNG, same size as the render: edges opaque (object silhouette from the mask, occluding "
               "contours from depth discontinuities), transparent elsewhere; overlay it 1:1 on a camera view",
    "mask": "greyscale PNG, 255 where the object is visible",
    "pose": "JSON: intrinsics K (pixels), field of view, camera and object 4x4 poses in metres",
    "usdz": "USDZ: the normalised object in its rendered pose, metres (metersPerUnit 1), upAxis Y, lifted "
            "vertically so that its lowest point rests on y = 0 (pose.json 'usdz')",
}
AXES = {
    "world": "Blender world: right-handed, +Z up, metres; poses named *_to_world are in it",
    "world_y_up": "pose.json 'y_up': right-handed, +Y up (USD/ARKit); (x, y, z)_world -> (x, z, -y); the USDZ's "
                  "frame is this one shifted so that the object rests on y = 0 (pose.json usdz.world_to_usd)",
    "camera_opencv": "+X right, +Y down, +Z forward along the optical axis (matches K)",
    "camera_blender": "+X right, +Y up, looking along -Z (Blender/OpenGL/ARKit)",
    "object": "the normalised mesh: origin at its bounding-box centre, axes as imported into Blender (Z up), "
              "largest extent object_size metres",
    "matrices": "4x4 row-major, column vectors: p_world = M @ [p_local, 1]",
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _read_logged_rgb(path: Path) -> np.ndarray | None:
    import cv2

    if not path.is_file():
        return None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else bgr[..., ::-1]


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of an export folder (ExportError if there is none or it is not one)."""
    path = Path(out_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a companion export manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ExportError(f"{path}: not a companion export manifest (format is not {FORMAT!r})")
    return data


def export_file(out_dir: str | Path, job_id: str, kind: str) -> Path:
    """Path of file ``kind`` (a key of :data:`FILES`) of an exported id; ExportError if not exported."""
    manifest = read_manifest(out_dir)
    job_id = check_id_text(job_id)
    if job_id not in manifest["renders"]:
        raise ExportError(f"{Path(out_dir) / MANIFEST}: id {job_id!r} was not exported")
    if kind not in FILES:
        raise ExportError(f"unknown companion file {kind!r}; one of {', '.join(FILES)}")
    return Path(out_dir) / job_id / FILES[kind]


class CompanionExporter:
    """Exports ids of one run into one folder; keep one open to export more ids later (the dashboard)."""

    def __init__(self, run_dir: str | Path, out_dir: str | Path) -> None:
        self.source = RunSource.open(run_dir)
        self.out_dir = Path(out_dir)
        render = self.source.experiment.render
        # The overlay needs mask and depth; extra passes do not change the image.
        self.settings = render.model_copy(update={"passes": tuple(dict.fromkeys((*render.passes, "mask", "depth")))})

    def export(self, ids: Iterable[str], *, on_progress: Callable[[str, str], None] | None = None
               ) -> dict[str, Any]:
        """Export ``ids`` (re-render, overlay, poses, USDZ); returns the updated manifest."""
        from threedb.sim.render.process import RenderProcess, fast_scratch_dir

        ids = self.source.check_ids(ids)
        if not ids:
            raise ExportError("no ids to export")
        self._start_manifest()  # refuses a folder holding another run's export before any work
        entries: dict[str, Any] = {}
        jobs = {job_id: self.source.job(job_id) for job_id in ids}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        scratch = fast_scratch_dir("threedb-companion-")
        try:
            renders = {}
            with RenderProcess(self.settings, scratch / "render") as proc:
                for job_id, job in jobs.items():
                    if on_progress:
                        on_progress(job_id, "render")
                    renders[job_id] = proc.render(job)
            if on_progress:
                on_progress(", ".join(ids), "usdz")
            staging = {job_id: scratch / "out" / job_id for job_id in ids}
            for folder in staging.values():
                folder.mkdir(parents=True)
            usd = export_usdz(self.settings, [(jobs[i], staging[i] / FILES["usdz"]) for i in ids], scratch / "usd")
            for job_id in ids:
                entry = self._write_one(job_id, renders[job_id], usd[job_id], staging[job_id])
                target = self.out_dir / job_id
                if target.exists():
                    shutil.rmtree(target)
                shutil.move(str(staging[job_id]), target)
                entries[job_id] = entry
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        with open(self.out_dir / ".manifest.lock", "w") as lock:  # exports into one folder may overlap
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = self._start_manifest()
            for job_id, entry in entries.items():
                manifest["renders"][job_id] = entry
                if job_id not in manifest["ids"]:
                    manifest["ids"].append(job_id)
            manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            _write_json(self.out_dir / MANIFEST, manifest)
        return manifest

    def _start_manifest(self) -> dict[str, Any]:
        run_dir = str(self.source.run_dir)
        if (self.out_dir / MANIFEST).exists():
            manifest = read_manifest(self.out_dir)
            if manifest.get("source_run", {}).get("path") != run_dir:
                raise ExportError(f"{self.out_dir / MANIFEST}: this folder holds an export of "
                                  f"{manifest.get('source_run', {}).get('path')}, not {run_dir}; use another --out")
            return manifest
        run_manifest = {}
        try:
            run_manifest = json.loads((self.source.run_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            pass
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "versions": {"threedb": _version("threedb"), "bpy": _version("bpy")},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_run": {"path": run_dir, "config": "config.resolved.yaml", "seed": self.source.experiment.seed,
                           "started": run_manifest.get("started"), "versions": run_manifest.get("versions")},
            "units": "metres (1 Blender unit = 1 m); pixels for intrinsics",
            "axes": AXES, "files": {k: {"name": FILES[k], "content": FILE_DOCS[k]} for k in FILES},
            "ids": [], "renders": {},
        }

    def _write_one(self, job_id: str, out: Any, usd: dict[str, Any], folder: Path) -> dict[str, Any]:
        from threedb.sim.render.files import write_png

        row = self.source.rows[job_id]
        meta = out.meta
        for what, got, want in (("camera pose", meta["camera_to_world"], usd["camera_to_world"]),
                                ("object pose", meta["object_to_world"], usd["root_to_world"])):
            if np.max(np.abs(np.asarray(got) - np.asarray(want))) > POSE_TOLERANCE:
                raise ExportError(f"job {job_id}: the {what} of the re-render and of the USDZ scene differ; "
                                  "are the job's controls deterministic?")
        mask, depth = out.passes["mask"], out.passes.get("depth")
        write_png(folder / FILES["render"], out.rgb)
        write_png(folder / FILES["mask"], mask.astype(np.uint8) * 255)
        write_rgba_png(folder / FILES["overlay"], edge_overlay(mask, depth))
        h, w = out.rgb.shape[:2]
        pose = pose_record(meta["K"], (w, h), meta["camera_to_world"], meta["object_to_world"],
                           usd["normalisation_scale"])
        lo, hi = np.asarray(usd["bounds_world"])
        lift = np.eye(4)
        lift[2, 3] = usd["lift"]
        to_usd = Z_UP_TO_Y_UP @ lift  # Z-up world -> the USDZ's Y-up frame (object resting on y = 0)
        corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        in_usd = (corners @ to_usd.T)[:, :3]
        pose.update({
            "id": job_id, "object_uid": row.get("object_uid"), "model": row.get("model"),
            "environment": row.get("environment"),
            "object_size": self.source.experiment.assets.object_size,
            "object_bounds_world": {"min": lo.tolist(), "max": hi.tolist()},
            "usdz": {"lift_m": usd["lift"], "world_to_usd": to_usd.tolist(),
                     "object_to_usd": (to_usd @ np.asarray(pose["object_to_world"])).tolist(),
                     "object_bounds": {"min": in_usd.min(0).tolist(), "max": in_usd.max(0).tolist()}},
            "controls_report": meta.get("controls_report"),
        })
        _write_json(folder / FILES["pose"], pose)
        logged_path = self.source.run_dir / "images" / f"{job_id}_rgb.png"
        logged = _read_logged_rgb(logged_path)
        check: dict[str, Any] = {"logged_image": None}
        if logged is not None:
            if logged.shape != out.rgb.shape:
                check.update(logged_image=str(logged_path), identical=False, max_abs_diff=None)
            else:
                diff = np.abs(logged.astype(np.int16) - out.rgb.astype(np.int16))
                check.update(logged_image=str(logged_path), identical=bool(not diff.any()),
                             max_abs_diff=int(diff.max()), mean_abs_diff=float(diff.mean()))
        return {"files": {k: f"{job_id}/{name}" for k, name in FILES.items()},
                "object_uid": row.get("object_uid"), "environment": row.get("environment"),
                "render_args": row.get("render_args"), "seed": row.get("seed"), "status": row.get("status"),
                "image_size": [w, h], "rerender_check": check}


def export_ids(run_dir: str | Path, ids: Iterable[str], out_dir: str | Path, *,
               on_progress: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Export ``ids`` of run ``run_dir`` into ``out_dir``; returns the manifest (also in ``out_dir/manifest.json``).

    Ids already exported to ``out_dir`` are kept (and re-exported if asked again). Raises
    :class:`ExportError` for an unknown id, naming it, before anything is written.
    """
    return CompanionExporter(run_dir, out_dir).export(ids, on_progress=on_progress)


def export_one(run_dir: str | Path, job_id: str, out_dir: str | Path) -> dict[str, Any]:
    """Export one id; returns its manifest entry (``files`` relative to ``out_dir``, ``rerender_check``, ...)."""
    return export_ids(run_dir, [job_id], out_dir)["renders"][check_id_text(job_id)]
