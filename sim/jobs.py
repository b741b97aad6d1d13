"""Render jobs: the JSON-serialisable unit of work a render worker executes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from threedb.controls.registry import ControlSpec
from threedb.sim.assets import EnvironmentAsset, MeshNormalization, ObjectAsset


def derive_seed(experiment_seed: int, job_id: str) -> int:
    """A per-job seed from the experiment seed and the job id (stable across runs and machines)."""
    digest = hashlib.blake2b(f"{experiment_seed}:{job_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class PreparedObject:
    """An object asset checked up front, with its normalisation (None: not normalised by trimesh)."""

    asset: ObjectAsset
    normalization: MeshNormalization | None
    normalize: bool
    object_size: float

    def job_spec(self) -> dict[str, Any]:
        norm = self.normalization
        return {"uid": self.asset.uid, "path": str(self.asset.path), "format": self.asset.format,
                "up_axis": self.asset.up_axis, "axis_scale": list(self.asset.axis_scale), "normalize": self.normalize, "object_size": self.object_size,
                "normalization": None if norm is None else {"center": list(norm.center), "scale": norm.scale}}


def environment_spec(env: EnvironmentAsset) -> dict[str, Any]:
    return {"name": env.name, "path": str(env.path), "kind": env.kind}


def make_job(job_id: str, seed: int, obj: PreparedObject, env: EnvironmentAsset,
             controls: list[ControlSpec], values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A job rendering ``obj`` in ``env`` with control ``values`` ({instance: {param: value}})."""
    return {"id": job_id, "seed": derive_seed(seed, job_id), "object": obj.job_spec(),
            "environment": environment_spec(env),
            "controls": [{"name": c.name, "ref": c.ref, "class": c.cls.__name__, "where": f"controls[{i}]",
                          "values": dict(values.get(c.name, {}))} for i, c in enumerate(controls)]}
