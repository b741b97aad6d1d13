"""Render settings: the ``render:`` section of a config, shared by the master and render workers.

Pure Python (no ``bpy``) so the master can validate them before any worker starts.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

PassName = Literal["depth", "mask", "uv"]


class JobTimeout(BaseModel):
    """How long one render may take before its Blender process is killed and the job re-issued: ``factor``
    times the slowest of this worker's recent renders, within ``[floor_s, ceiling_s]`` (``ceiling_s`` until
    a render has been measured)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: float = Field(10.0, ge=1, description="multiple of the slowest recent render")
    floor_s: float = Field(60.0, gt=0, description="never less than this many seconds")
    ceiling_s: float = Field(600.0, gt=0, description="never more; also the first render's limit")

    @field_validator("ceiling_s")
    @classmethod
    def _ordered(cls, value: float, info: ValidationInfo) -> float:
        floor = info.data.get("floor_s")
        if floor is not None and value < floor:
            raise ValueError(f"ceiling_s ({value:g}) must be >= floor_s ({floor:g})")
        return value

    def seconds(self, recent: list[float]) -> float:
        """The limit for the next render, given the durations of recent ones."""
        if not recent:
            return self.ceiling_s
        return min(max(self.factor * max(recent), self.floor_s), self.ceiling_s)


class RenderSettings(BaseModel):
    """How every image of an experiment is rendered (Cycles)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: tuple[int, int] = Field((128, 128), description="output width, height in pixels")
    samples: int = Field(16, ge=1, le=65536, description="Cycles samples per pixel (maximum with adaptive sampling)")
    adaptive_sampling: bool = Field(True, description="stop sampling converged pixels early")
    adaptive_threshold: float = Field(0.01, gt=0, le=1, description="noise threshold of adaptive sampling")
    denoise: bool = Field(False, description="OpenImageDenoise on the final image")
    device: Literal["cpu", "gpu", "auto"] = Field("cpu", description="'gpu' fails if none; 'auto' uses one if present")
    gpu_backend: Literal["auto", "CUDA", "OPTIX", "HIP", "ONEAPI", "METAL"] = "auto"
    threads: int = Field(1, ge=0, description="CPU threads per render worker; 0 = all cores")
    passes: tuple[PassName, ...] = Field(("depth", "mask"), description="extra passes besides rgb")
    point_cloud: bool = Field(False, description="also build a coloured point cloud of the visible object")
    ground: bool = Field(False, description="add a shadow-catcher ground plane under the object")
    environment_strength: float = Field(1.0, ge=0, description="HDRI strength (world background and lighting)")
    environment_rotation: float = Field(0.0, description="HDRI rotation about the vertical axis, radians")
    max_jobs_per_worker: int = Field(1000, ge=1, description="a render worker is restarted after this many jobs")
    persistent_data: bool = Field(True, description="keep Cycles scene data between renders (much faster)")
    job_timeout: JobTimeout = Field(default_factory=JobTimeout,
                                    description="when a hung render is killed and its job re-issued")

    @field_validator("resolution", mode="before")
    @classmethod
    def _square(cls, value: object) -> object:
        return (value, value) if isinstance(value, int) else value

    @field_validator("resolution")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8 or max(value) > 16384:
            raise ValueError("each side must be between 8 and 16384 pixels")
        return value

    @field_validator("passes")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    def wants(self, pass_name: str) -> bool:
        """Whether pass ``pass_name`` is rendered (a point cloud needs depth and mask)."""
        return pass_name in self.passes or (self.point_cloud and pass_name in ("depth", "mask"))
