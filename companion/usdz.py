"""USDZ export of jobs' objects in their rendered poses, in a Blender subprocess (the caller never imports bpy)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from threedb.companion.source import ExportError

#: Seconds one export subprocess may take per job (Blender start-up plus mesh import and export).
TIMEOUT_PER_JOB_S = 300.0


def export_usdz(settings: Any, items: Sequence[tuple[Mapping[str, Any], Path]], scratch: Path
                ) -> dict[str, dict[str, Any]]:
    """Export each ``(job, usdz_path)``; returns ``{job id: poses}`` (see :mod:`.usdz_worker`).

    ``settings`` are the run's :class:`~threedb.sim.render.settings.RenderSettings` (the scene is
    built as the render worker builds it; the device is forced to CPU since nothing is rendered).
    """
    scratch.mkdir(parents=True, exist_ok=True)
    request = {"settings": settings.model_copy(update={"device": "cpu"}).model_dump(mode="json"),
               "scratch": str(scratch), "log": str(scratch / "blender-usd.log"),
               "items": [{"job": dict(job), "usdz": str(path)} for job, path in items]}
    request_path, result_path = scratch / "usd-request.json", scratch / "usd-result.json"
    request_path.write_text(json.dumps(request))
    result_path.unlink(missing_ok=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "threedb.companion.usdz_worker", str(request_path),
                               str(result_path)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TIMEOUT_PER_JOB_S * max(1, len(items)))
    except subprocess.TimeoutExpired:
        raise ExportError("the USDZ export subprocess timed out") from None
    if not result_path.is_file():
        raise ExportError(f"the USDZ export subprocess died (exit code {proc.returncode}): "
                          f"{proc.stderr.strip()[-2000:]}")
    results: dict[str, dict[str, Any]] = json.loads(result_path.read_text())
    for job_id, result in results.items():
        if "error" in result:
            what = "setting up Blender" if job_id == "__setup__" else f"job {job_id}"
            raise ExportError(f"USDZ export failed for {what}: {result['error']}")
    missing = [str(job["id"]) for job, _ in items if str(job["id"]) not in results]
    if missing:
        raise ExportError(f"the USDZ export subprocess skipped {', '.join(missing)}")
    return results
