"""Shared fixtures: small real Blender renders (64 px, few samples) through a real render worker."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import pytest

from threedb.controls.registry import ControlSpec, resolve_control
from threedb.sim.assets import check_mesh, load_catalog
from threedb.sim.jobs import PreparedObject, make_job
from threedb.sim.render.process import RenderProcess, fast_scratch_dir
from threedb.sim.render.settings import RenderSettings

REPO = Path(__file__).resolve().parents[1]
SMALL = RenderSettings(resolution=64, samples=4, passes=("depth", "mask", "uv"), threads=1)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (the machine's 2 cores are shared), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def catalog():
    return load_catalog("default")


def control(entry: dict[str, Any]) -> ControlSpec:
    """A resolved control spec from a config-style entry."""
    return resolve_control(entry, key="controls[0]", file=None, base_dir=REPO)


@pytest.fixture(scope="session")
def job_for(catalog):
    """Build a job: job_for(object uid, environment name, controls=[(spec, values)], seed=0)."""
    prepared: dict[str, PreparedObject] = {}

    def build(uid: str = "mug", env: str = "city", controls: list[tuple[ControlSpec, dict]] = (),
              seed: int = 0, job_id: str = "job") -> dict[str, Any]:
        if uid not in prepared:
            asset = catalog.objects[uid]
            prepared[uid] = PreparedObject(asset, check_mesh(asset, 1.0), True, 1.0)
        specs = [spec for spec, _ in controls]
        values = {spec.name: vals for spec, vals in controls}
        return make_job(job_id, seed, prepared[uid], catalog.environments[env], specs, values)
    return build


@pytest.fixture(scope="session")
def worker() -> Iterator[RenderProcess]:
    """One render worker shared by the render tests (scene set-up is the slow part)."""
    with RenderProcess(SMALL, fast_scratch_dir()) as proc:
        yield proc


def datablock_probe() -> ControlSpec:
    """The test-only control of tests/plugins/datablock_probe.py (reports Blender's data-block counts)."""
    return resolve_control({"file": "plugins/datablock_probe.py"}, key="controls[0]", file=None,
                           base_dir=REPO / "tests")


def rotation(angle: float) -> tuple[ControlSpec, dict]:
    return control({"type": "orientation"}), {"rotation_z": angle}


__all__ = ["SMALL", "control", "datablock_probe", "rotation", "math"]
