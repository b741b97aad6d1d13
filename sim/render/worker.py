"""Runs render jobs inside a render worker process (imports ``bpy``).

A job is a JSON-serialisable mapping::

    {"id": str, "seed": int,
     "object": {"uid", "path", "format", "up_axis", "normalization", "normalize", "object_size"},
     "environment": {"name", "path", "kind"},
     "controls": [{"name": instance name, "ref": "module:Class", "values": {param: value}}]}

Scene controls are applied in config order, the image is rendered, scene controls are undone in
reverse order (always, even if the render failed), then image controls transform the image. A job
with ``"verify_undo": true`` also compares scene snapshots (:mod:`.snapshot`) before and after and
fails with :class:`UndoIncomplete` naming what changed.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from threedb.controls.base import Control, ImageControl, SceneControl
from threedb.controls.registry import import_control
from threedb.sim.render.outputs import RenderOutput
from threedb.sim.render.scene import RenderScene
from threedb.sim.render.settings import RenderSettings
from threedb.sim.render.snapshot import scene_snapshot, snapshot_diff


class UndoIncomplete(RuntimeError):
    """A job asked for ``verify_undo`` and the scene was not restored exactly."""


class ControlFailed(RuntimeError):
    """A control's apply or undo raised; the message names the control and its config entry."""


@contextmanager
def _blame(control: Control, where: str, step: str) -> Iterator[None]:
    try:
        yield
    except ControlFailed:
        raise
    except Exception as exc:
        raise ControlFailed(f"control {control.instance_name!r} ({where}) failed in {step}: "
                            f"{type(exc).__name__}: {exc}") from exc


class JobRunner:
    """Owns the worker's :class:`RenderScene` and the control instances of the experiment."""

    def __init__(self, settings: RenderSettings, scratch_dir: str | Path) -> None:
        self.scene = RenderScene(settings, scratch_dir)
        self._controls: dict[tuple[str, str], Control] = {}

    def _control(self, entry: Mapping[str, Any]) -> Control:
        key = (entry["name"], entry["ref"])
        if key not in self._controls:
            self._controls[key] = import_control(entry["ref"])(entry["name"])
        return self._controls[key]

    def run(self, job: Mapping[str, Any]) -> RenderOutput:
        """Render one job; see the module docstring."""
        scene = self.scene
        scene.report = {}
        scene.set_environment(job["environment"])
        scene.set_object(job["object"])
        scene.frame_object()
        steps = [(self._control(c), c.get("values", {}), c.get("where", c["name"]))
                 for c in job.get("controls", ())]
        before = scene_snapshot(scene.scene) if job.get("verify_undo") else None
        applied: list[tuple[SceneControl, str]] = []
        try:
            for control, values, where in steps:
                if isinstance(control, SceneControl):
                    with _blame(control, where, "apply"):
                        control.apply(scene, values)
                    applied.append((control, where))
            output = scene.render(int(job["seed"]))
        finally:
            for control, where in reversed(applied):
                with _blame(control, where, "undo"):
                    control.undo(scene)
        if before is not None:
            changed = snapshot_diff(before, scene_snapshot(scene.scene))
            if changed:
                names = ", ".join(c.instance_name for c, _ in applied)
                raise UndoIncomplete(f"scene differs after undoing {names}: " + "; ".join(changed[:5])
                                     + (f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""))
        output.meta["controls_report"] = dict(scene.report)
        rng = np.random.default_rng(int(job["seed"]))
        for control, values, where in steps:
            if isinstance(control, ImageControl):
                with _blame(control, where, "apply"):
                    output.rgb = control.apply(output.rgb, values, output.passes, rng)
        return output
