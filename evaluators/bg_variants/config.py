"""The config of ``threedb bg-variants CONFIG`` (YAML; ``base_config:`` chains and ``--set`` work;
docs/backgrounds.md).

::

    seed: 0
    device: auto
    model: {card: ../assets/models/quickstart/card.json}     # or an inline `inference:` mapping
    models: []                        # more models scored on the same variants: [{name: ..., card: ...}]
    data: {root: ../assets/datasets/quickstart_heldout, max_examples: 110, batch_size: 64}
    foreground: {source: auto, grabcut_iterations: 5}     # auto | mask | boxes; coco: / voc: box files
    variants: [ORIGINAL, ONLY-BG-B, ONLY-BG-T, NO-FG, ONLY-FG, MIXED-SAME, MIXED-RAND, MIXED-NEXT]
    crop: null                        # the model's eval crop {resize, size} for the crop filter; null: none
    paired: true
    mixed_rand_own_class: true
    adversarial: {enabled: true, budget: 20, top_k: 8}
    grid: {examples: 8}
    output: ../runs/bg_variants_quickstart
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from threedb.evaluators.jobs.config import MODEL_PATH_KEYS, JobConfig, JobSchema, load_job_config
from threedb.robustness.backgrounds import GRABCUT_ITERATIONS, VARIANTS

_STRICT = ConfigDict(extra="forbid")
#: Path keys: the dataset, the output, the main model's and every extra model's files.
PATH_KEYS = (("data", "root"), ("output",), ("foreground", "coco"), ("foreground", "voc"), *MODEL_PATH_KEYS,
             *(("models", "*", key[1]) for key in MODEL_PATH_KEYS))


class ForegroundConfig(BaseModel):
    """``foreground:``: where the foreground comes from (``auto``: exact masks when the dataset has them,
    else its boxes through GrabCut) and GrabCut's iterations."""

    model_config = _STRICT
    source: Literal["auto", "mask", "boxes"] = "auto"
    coco: Optional[str] = None        #: a COCO json of boxes for an image-folder dataset
    voc: Optional[str] = None         #: a Pascal VOC annotation folder for an image-folder dataset
    grabcut_iterations: int = Field(GRABCUT_ITERATIONS, ge=1, le=100)


class CropConfig(BaseModel):
    """``crop:``: the model's evaluation crop (torchvision ``Resize(resize)`` + ``CenterCrop(size)``)."""

    model_config = _STRICT
    resize: Optional[int] = Field(256, gt=0)
    size: int = Field(224, gt=0)


class AdversarialConfig(BaseModel):
    """``adversarial:``: every other-class background behind every foreground, or ``budget`` of them."""

    model_config = _STRICT
    enabled: bool = True
    budget: Optional[int] = Field(None, gt=0)
    top_k: int = Field(8, ge=1, le=64)


class GridConfig(BaseModel):
    model_config = _STRICT
    examples: int = Field(8, ge=0, le=64)


class BgVariantsSchema(JobSchema):
    """The keys of a background-variant job (the shared job keys plus its own sections)."""

    models: list[dict[str, Any]] = Field(default_factory=list)
    foreground: ForegroundConfig = Field(default_factory=ForegroundConfig)
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS), min_length=1)
    crop: Optional[CropConfig] = None
    paired: bool = True
    mixed_rand_own_class: bool = True
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    grid: GridConfig = Field(default_factory=GridConfig)

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; the variants are {list(VARIANTS)}")
        if len(set(value)) != len(value):
            raise ValueError("a variant is listed twice")
        return value


def model_entries(config: JobConfig[BgVariantsSchema]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, key, spec)`` of every model: ``model`` (named ``model``, or its ``name:``) then ``models[i]``
    (each needs a unique ``name:``)."""
    schema = config.schema
    main = dict(schema.model)
    entries = [(str(main.pop("name", "model")), "model", main)]
    for i, entry in enumerate(schema.models):
        spec = dict(entry)
        name = spec.pop("name", None)
        if not isinstance(name, str) or not name:
            raise config.error(f"models[{i}]", "every extra model needs a name:", value=entry)
        entries.append((name, f"models[{i}]", spec))
    names = [name for name, _, _ in entries]
    for (name, key, _), count in zip(entries, (names.count(n) for n in names)):
        if count > 1:
            raise config.error(f"{key}.name" if key != "model" else key, f"model name {name!r} is used twice",
                               value=name)
    return entries


def load_bg_variants_config(path: str | Path, *,
                            overrides: Mapping[str, Any] | None = None) -> JobConfig[BgVariantsSchema]:
    """Load and validate a background-variant job config; errors name the file and the key."""
    config = load_job_config(path, BgVariantsSchema, path_keys=PATH_KEYS, overrides=overrides)
    model_entries(config)
    if config.schema.paired and not config.schema.variants:
        raise config.error("variants", "no variants asked for")
    return config


__all__ = ["AdversarialConfig", "BgVariantsSchema", "CropConfig", "ForegroundConfig", "GridConfig", "PATH_KEYS",
           "load_bg_variants_config", "model_entries"]
