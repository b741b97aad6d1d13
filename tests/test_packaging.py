"""Packaging: the namespace mapping is complete and the master never imports bpy."""
from __future__ import annotations

import subprocess
import sys
import tomllib

from conftest import REPO

FOLDERS = {"sim": "threedb.sim", "controls": "threedb.controls", "policies": "threedb.policies",
           "evaluators": "threedb.evaluators", "robustness": "threedb.robustness", "assets": "threedb.assets"}


def test_every_python_folder_is_a_listed_package():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for folder, package in FOLDERS.items():
        assert config["package-dir"][package] == folder
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            name = ".".join([package, *rel.parts])
            assert name in listed, f"{name} ({init.parent}) is missing from pyproject's packages"


def test_master_side_modules_do_not_import_bpy():
    code = ("import sys, threedb.sim.cli, threedb.sim.config, threedb.sim.assets, threedb.sim.experiment, "
            "threedb.sim.preview, threedb.policies.space, threedb.controls.scene.camera, "
            "threedb.controls.scene.orientation, threedb.controls.registry, threedb.policies.registry, "
            "threedb.sim.store, threedb.sim.transport; "
            "from threedb.controls.registry import BUILTIN_CONTROLS, import_control; "
            "[import_control(ref) for ref in BUILTIN_CONTROLS.values()]; "
            "assert 'bpy' not in sys.modules, 'bpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("render", "controls"):
        assert command in out
