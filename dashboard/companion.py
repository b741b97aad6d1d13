"""Companion exports served by the dashboard (the phone page ``/m/<run>/<id>``).

Files come from ``threedb companion export`` folders (:mod:`threedb.companion.export`): by default
``RUN_DIR/companion/``. An id not yet exported can be exported from the page (POST); exports run one
at a time in a background thread, since each re-renders the job in Blender.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from threedb.dashboard.files import read_inside
from threedb.dashboard.loader import Run
from threedb.sim.errors import ThreeDBError

log = logging.getLogger(__name__)
MEDIA = {".png": "image/png", ".json": "application/json", ".usdz": "model/vnd.usdz+zip"}
_export_lock = threading.Lock()  # one Blender export at a time, whatever the run


class CompanionMissing(ThreeDBError):
    """The id has no companion export (yet)."""


class Companion:
    """The companion export folder of one run."""

    def __init__(self, run: Run, out_dir: Path | None = None) -> None:
        self.run = run
        self.out_dir = (Path(out_dir) if out_dir is not None else run.path / "companion").resolve()
        self.state: dict[str, str] = {}   # id -> "exporting" or the error of its last export
        self._lock = threading.Lock()

    def _entry(self, job_id: str) -> dict[str, Any] | None:
        from threedb.companion.export import read_manifest

        if not (self.out_dir / "manifest.json").is_file():
            return None
        try:
            renders = read_manifest(self.out_dir).get("renders")
        except RecursionError:
            return None
        entry = renders.get(job_id) if isinstance(renders, dict) else None
        return entry if isinstance(entry, dict) else None

    def info(self, job_id: str) -> dict[str, Any]:
        """The export of a known id: its manifest entry and file URLs; CompanionMissing when there is none."""
        from threedb.companion.export import FILES

        entry = self._entry(job_id)
        if entry is None:
            with self._lock:
                state = self.state.get(job_id)
            hint = ("being exported; try again shortly" if state == "exporting"
                    else f"last export failed: {state}" if state else "not exported yet")
            raise CompanionMissing(f"id {job_id!r} of run {self.run.name!r} has no companion export ({hint})")
        base = f"/api/runs/{self.run.index}/companion/{job_id}/files"
        return {"run": self.run.index, "id": job_id, "entry": entry,
                "files": {kind: f"{base}/{kind}" for kind in FILES}}

    def file(self, job_id: str, kind: str) -> tuple[bytes, str]:
        """Bytes and media type of exported file ``kind`` of a known id; Refused (403) unless it is a
        regular file inside the export folder (symlinks followed)."""
        from threedb.companion.export import FILES, export_file

        if kind not in FILES:
            raise CompanionMissing(f"unknown companion file {kind!r} (one of {', '.join(FILES)})")
        if self._entry(job_id) is None:
            raise CompanionMissing(f"id {job_id!r} of run {self.run.name!r} has no companion export")
        path = export_file(self.out_dir, job_id, kind)
        data = read_inside(self.out_dir, path)
        if data is None:
            raise CompanionMissing(f"companion file {kind!r} of id {job_id!r} is missing")
        return data, MEDIA.get(path.suffix, "application/octet-stream")

    def start_export(self, job_id: str) -> dict[str, Any]:
        """Start exporting a known id in the background (no-op if it is already under way)."""
        with self._lock:
            if self.state.get(job_id) == "exporting":
                return {"id": job_id, "state": "exporting"}
            self.state[job_id] = "exporting"
        threading.Thread(target=self._export, args=(job_id,), daemon=True, name=f"companion-{job_id}").start()
        return {"id": job_id, "state": "exporting"}

    def _export(self, job_id: str) -> None:
        from threedb.companion.export import export_ids

        try:
            with _export_lock:
                export_ids(self.run.path, [job_id], self.out_dir)
            outcome = None
        except Exception as exc:  # reported on the page; the server goes on
            log.warning("companion export of %s failed: %s", job_id, exc)
            outcome = str(exc) or type(exc).__name__
        with self._lock:
            if outcome is None:
                self.state.pop(job_id, None)
            else:
                self.state[job_id] = outcome
