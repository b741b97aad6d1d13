"""The config of ``threedb project CONFIG`` (YAML; ``base_config:`` chains and ``--set`` work; docs/projection.md).

::

    seed: 0
    device: auto                       # auto | cpu | cuda | cuda:N (--device overrides)
    target:                            # the data to match: an ImageDataset folder
      root: ../assets/datasets/quickstart_heldout
      environments: [sunrise]          # optional filters: environments / exclude_environments
      split: {parts: 2, part: 0}       # optional: the samples whose id hashes to part 0 of 2
      max_examples: null               # optional cap, stratified over the classes
    source:                            # the auxiliary data whose groups are weighted (same keys, and:)
      root: ../assets/datasets/quickstart_heldout
      split: {parts: 2, part: 1}       # disjoint from the target's part 0
      details: null                    # optional: a run directory (or its details.log) with render metadata
    features:
      type: random                     # random (a fixed random conv encoder) | model (a layer of model:)
      resolution: 64                   # random: images resized to this square size
      width: 16                        # random encoder: first width (doubling per block),
      depth: 3                         #   blocks, output features, and its seed (null: the job's)
      out_features: 64
      seed: null
      layer: null                      # model: a submodule name; null: the input of the last Linear
      batch_size: 64
    model: null                        # features: model only: {card: ...} or an inference: mapping
    groups:
      type: render                     # labels | kmeans | render
      group_by: [environment, CameraControl.zoom_factor]   # render: environment, object, render_args keys
      bins: {zoom_factor: 2}           # render: numeric key -> equal-width bin count, or a list of edges
      k: 4                             # kmeans: clusters (within each class when labels are matched)
      small: error                     # a group with < 2 samples for a class: error | drop
    projection:
      per_class: true                  # one projection per target class (false: one global)
      match_labels: null               # class c onto the sources of class c; null: true unless type: labels
      bandwidth: null                  # the RBF sigma; null: median heuristic (or scale:, the thesis' a)
      scale: null
      solver: active_set               # active_set | pgd
      step_size: auto                  # auto (1/L) or a number (the thesis' 1.0)
      gradient: analytic               # analytic | central (the thesis' central differences)
      tol: 1.0e-06
      max_iter: 1000
      solver_options: {}               # active_set: epsilons, momentum, armijo, backtrack, max_backtracks
    resample: {n: null, replacement: true, uniform: false}   # n: null = the target's size
    render_more: {renders: 200, mass: 0.8, max_groups: null, base_config: null, seed: null}
    output: ../runs/project_quickstart # --out overrides
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from threedb.evaluators.jobs.config import MODEL_PATH_KEYS, JobConfig, load_job_config

_STRICT = ConfigDict(extra="forbid")

PATH_KEYS = (("target", "root"), ("target", "details"), ("source", "root"), ("source", "details"),
             ("render_more", "base_config"), ("output",), *MODEL_PATH_KEYS)
#: ``projection.solver_options`` each solver takes (step_size, tol, max_iter are keys of their own).
SOLVER_OPTIONS = {"active_set": frozenset({"epsilons", "momentum", "armijo", "backtrack", "max_backtracks"}),
                  "pgd": frozenset()}
#: The render-metadata keys every group_by accepts besides render_args keys.
RENDER_KEYS = ("environment", "object")


class SplitConfig(BaseModel):
    """``split: {parts: P, part: i, seed: s}``: the samples whose id hashes (with ``s``) to ``i`` modulo ``P``.
    A sample lands in the same part whatever the other filters, so two sections of one dataset with the
    same ``parts`` and ``seed`` and different ``part`` never share a sample."""

    model_config = _STRICT
    parts: int = Field(ge=2)
    part: int = Field(ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _part_below_parts(self) -> "SplitConfig":
        if self.part >= self.parts:
            raise ValueError(f"part must be below parts ({self.parts}), got {self.part}")
        return self


class DatasetSection(BaseModel):
    """``target:`` / ``source:``: an ImageDataset folder (``threedb dataset`` export or image-folder tree)."""

    model_config = _STRICT
    root: str
    environments: Optional[list[str]] = None
    exclude_environments: Optional[list[str]] = None
    split: Optional[SplitConfig] = None
    max_examples: Optional[int] = Field(None, gt=0)
    details: Optional[str] = None


class FeaturesConfig(BaseModel):
    model_config = _STRICT
    type: Literal["random", "model"] = "random"
    resolution: int = Field(64, gt=0)
    width: int = Field(16, gt=0)
    depth: int = Field(3, gt=0)
    out_features: int = Field(64, gt=0)
    seed: Optional[int] = None
    layer: Optional[str] = None
    batch_size: int = Field(64, gt=0)


BinSpec = Union[int, list[float]]


class GroupsConfig(BaseModel):
    model_config = _STRICT
    type: Literal["labels", "kmeans", "render"]
    group_by: Optional[list[str]] = None
    bins: Optional[dict[str, BinSpec]] = None
    k: Optional[int] = Field(None, gt=0)
    small: Literal["error", "drop"] = "error"

    @field_validator("group_by")
    @classmethod
    def _distinct(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                raise ValueError("must name at least one key (environment, object or a render_args key)")
            if any(not isinstance(v, str) or not v.strip() for v in value):
                raise ValueError("must be a list of key names")
            if len(set(value)) != len(value):
                raise ValueError(f"names a key twice: {value}")
        return value

    @field_validator("bins")
    @classmethod
    def _bins(cls, value: Optional[dict[str, BinSpec]]) -> Optional[dict[str, BinSpec]]:
        for key, spec in (value or {}).items():
            if isinstance(spec, bool):
                raise ValueError(f"{key}: must be a bin count or a list of edges, got {spec!r}")
            if isinstance(spec, int):
                if spec < 1:
                    raise ValueError(f"{key}: the bin count must be at least 1, got {spec}")
            elif len(spec) < 2 or any(b <= a for a, b in zip(spec, spec[1:])):
                raise ValueError(f"{key}: bin edges must be at least 2 strictly increasing numbers, got {spec}")
        return value


class ProjectionConfig(BaseModel):
    model_config = _STRICT
    per_class: bool = True
    match_labels: Optional[bool] = None
    bandwidth: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    scale: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    solver: Literal["active_set", "pgd"] = "active_set"
    step_size: Union[Literal["auto"], float] = "auto"
    gradient: Literal["analytic", "central"] = "analytic"
    tol: float = Field(1e-6, ge=0)
    max_iter: int = Field(1000, gt=0)
    solver_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("step_size")
    @classmethod
    def _step(cls, value: Any) -> Any:
        if value != "auto" and not value > 0:
            raise ValueError(f"must be auto or a positive number, got {value!r}")
        return value


class ResampleConfig(BaseModel):
    model_config = _STRICT
    n: Optional[int] = Field(None, gt=0)
    replacement: bool = True
    uniform: bool = False


class RenderMoreConfig(BaseModel):
    model_config = _STRICT
    renders: int = Field(200, gt=0)
    mass: float = Field(0.8, gt=0, le=1)
    max_groups: Optional[int] = Field(None, gt=0)
    base_config: Optional[str] = None
    seed: Optional[int] = Field(None, ge=0)


class ProjectSchema(BaseModel):
    model_config = _STRICT
    seed: int = 0
    device: str = "auto"
    title: Optional[str] = None
    model: Optional[dict[str, Any]] = None
    target: DatasetSection
    source: DatasetSection
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    groups: GroupsConfig
    projection: ProjectionConfig = Field(default_factory=ProjectionConfig)
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    render_more: Optional[RenderMoreConfig] = Field(default_factory=RenderMoreConfig)
    output: str


def match_labels(schema: ProjectSchema) -> bool:
    """Whether class ``c`` is projected onto the sources labelled ``c`` (``projection.match_labels``; by
    default yes, except for ``groups.type: labels``, where each class would have one group)."""
    chosen = schema.projection.match_labels
    return (schema.groups.type != "labels") if chosen is None else chosen


def _check(config: JobConfig[ProjectSchema]) -> None:
    """The rules between sections that the schema alone cannot state."""
    s = config.schema
    g = s.groups
    if g.type == "render" and g.group_by is None:
        raise config.error("groups", "groups.type: render needs group_by: (environment, object and/or render_args "
                           "keys such as CameraControl.zoom_factor), e.g. group_by: [environment]")
    if g.type != "render":
        for key in ("group_by", "bins"):
            if getattr(g, key):
                raise config.error(f"groups.{key}", f"{key}: applies to groups.type: render only", value=getattr(g, key))
    if g.type == "kmeans" and g.k is None:
        raise config.error("groups", "groups.type: kmeans needs k: (the number of clusters), e.g. k: 4")
    if g.type != "kmeans" and g.k is not None:
        raise config.error("groups.k", "k: applies to groups.type: kmeans only", value=g.k)
    if g.type == "labels" and s.projection.per_class and match_labels(s):
        raise config.error("projection.match_labels", "with groups.type: labels and match_labels: true each "
                           "class would be projected onto its own label alone (one group); set match_labels: false "
                           "(each target class onto every source class) or per_class: false", value=True)
    if s.projection.bandwidth is not None and s.projection.scale is not None:
        raise config.error("projection.scale", "give bandwidth: (sigma) or scale: (the thesis' a = 1/sigma^2), "
                           "not both", value=s.projection.scale)
    if s.features.type == "model" and s.model is None:
        raise config.error("features.type", "features: model needs a model: section ({card: ...} or an "
                           "inference: mapping)", value="model")
    allowed = SOLVER_OPTIONS[s.projection.solver]
    unknown = sorted(set(s.projection.solver_options) - allowed)
    if unknown:
        raise config.error(f"projection.solver_options.{unknown[0]}", f"not an option of solver {s.projection.solver} "
                           f"({'it takes ' + ', '.join(sorted(allowed)) if allowed else 'it takes none'})",
                           value=s.projection.solver_options[unknown[0]])
    if s.target.details is not None:
        raise config.error("target.details", "details: (render metadata for render groups) applies to source: only",
                           value=s.target.details)
    if s.features.type == "random" and s.features.layer is not None:
        raise config.error("features.layer", "layer: applies to features.type: model only", value=s.features.layer)


def load_project_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> JobConfig[ProjectSchema]:
    """Load and validate a projection job config; errors name the file and the key."""
    config = load_job_config(path, ProjectSchema, path_keys=PATH_KEYS, overrides=overrides)
    _check(config)
    return config


__all__ = ["DatasetSection", "FeaturesConfig", "GroupsConfig", "ProjectSchema", "ProjectionConfig", "RENDER_KEYS",
           "RenderMoreConfig", "ResampleConfig", "SplitConfig", "load_project_config", "match_labels"]
