"""The control plugin API: file, module and entry-point plugins, named instances, failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, SMALL
from threedb.controls.registry import available_controls, resolve_control
from threedb.sim.config import load_config
from threedb.sim.errors import ConfigError
from threedb.sim.render.process import RenderProcess, fast_scratch_dir

PLUGIN = textwrap.dedent('''
    from threedb.controls import Param, SceneControl

    class Nudge(SceneControl):
        """Moves the object sideways."""
        name = "nudge"
        params = (Param("dx", "float", 0.0, "shift", low=-1.0, high=1.0, unit="scene units"),)

        def apply(self, scene, values):
            if values["dx"] == 1.0:
                raise RuntimeError("nudge refuses dx = 1")
            self._saved = scene.root.location.x
            scene.root.location.x += values["dx"]

        def undo(self, scene):
            scene.root.location.x = self._saved
''')


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "threedb.sim.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=600)


def test_example_plugin_config_renders_with_named_instances(tmp_path):
    exp = load_config(REPO / "configs" / "custom_control_example.yaml")
    assert [c.name for c in exp.controls] == ["orientation", "tilt", "soft_vignette", "strong_vignette"]
    out = tmp_path / "out"
    result = cli("render", "configs/custom_control_example.yaml", "--out", str(out), "-n", "2",
                 "--set", "render.resolution=64", "--set", "render.samples=4")
    assert result.returncode == 0, result.stderr
    records = json.loads((out / "preview.json").read_text())["renders"]
    assert all(set(r["controls"]) == {"orientation", "tilt", "soft_vignette", "strong_vignette"} for r in records)
    assert all(-30 <= r["controls"]["tilt"]["angle"] <= 30 for r in records)


def test_module_plugin_loads_and_renders(tmp_path, monkeypatch, job_for):
    (tmp_path / "my_nudge.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = resolve_control({"module": "my_nudge", "dx": [-0.5, 0.5]}, key="controls[0]", file="x.yaml",
                           base_dir=tmp_path)
    assert spec.kind == "nudge" and spec.ref == "my_nudge"
    # A worker started now inherits sys.path (the module is importable there as in a user's install).
    with RenderProcess(SMALL, fast_scratch_dir()) as worker:
        moved = worker.render(job_for("mug", "city", [(spec, {"dx": 0.3})])).passes["mask"]
        still = worker.render(job_for("mug", "city", [(spec, {"dx": 0.0})])).passes["mask"]
    assert moved.nonzero()[1].mean() > still.nonzero()[1].mean() + 3  # moved right in the image


def test_entry_point_plugin_is_listed_and_usable(tmp_path, monkeypatch):
    (tmp_path / "nudge_pkg.py").write_text(PLUGIN)
    dist = tmp_path / "nudge_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nudge-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[threedb.controls]\nnudge = nudge_pkg:Nudge\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available_controls()["nudge"] == "nudge_pkg:Nudge"
    spec = resolve_control({"type": "nudge", "dx": 0.2}, key="controls[0]", file="x.yaml", base_dir=tmp_path)
    assert spec.cls.__name__ == "Nudge"
    listing = cli("controls", env={"PYTHONPATH": str(tmp_path)})
    assert "nudge (scene control, nudge_pkg:Nudge)" in listing.stdout and "scene units" in listing.stdout


def test_plugin_that_fails_to_import_is_a_config_error(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(ConfigError, match=r"x.yaml: controls\[3\].file: cannot load control 'broken.py': "
                                          r"ModuleNotFoundError"):
        resolve_control({"file": "broken.py"}, key="controls[3]", file="x.yaml", base_dir=tmp_path)


def test_misspelled_parameter_gets_a_suggestion(tmp_path):
    (tmp_path / "nudge.py").write_text(PLUGIN)
    with pytest.raises(ConfigError, match=r"controls\[0\].dxx: control 'nudge' has no parameter 'dxx' "
                                          r"\(did you mean 'dx'\?\)"):
        resolve_control({"file": "nudge.py", "dxx": 1}, key="controls[0]", file="x.yaml", base_dir=tmp_path)


def test_a_failing_job_is_recorded_and_the_others_still_render(tmp_path):
    (tmp_path / "nudge.py").write_text(PLUGIN)
    config = tmp_path / "exp.yaml"
    config.write_text(textwrap.dedent('''
        assets: {objects: [mug], environments: [city]}
        render: {resolution: 64, samples: 4}
        controls:
          - file: nudge.py
            dx: {choices: [0.0, 1.0]}
    '''))
    out = tmp_path / "out"
    result = cli("render", str(config), "--out", str(out), "-n", "6", "--seed", "1")
    records = json.loads((out / "preview.json").read_text())["renders"]
    failed = [r for r in records if "error" in r]
    assert failed and len(failed) < len(records)
    assert all("control 'nudge' (controls[0]) failed in apply: RuntimeError: nudge refuses dx = 1" in r["error"]
               and r["controls"]["nudge"]["dx"] == 1.0 for r in failed)
    assert all((out / r["files"]["rgb"]).is_file() for r in records if "error" not in r)
    assert result.returncode == 1 and "failed: " in result.stderr
