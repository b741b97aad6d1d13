"""The config of ``threedb certify CONFIG`` (YAML; ``base_config:`` chains and ``--set`` work; docs/certify.md).

::

    seed: 0
    device: auto                       # auto | cpu | cuda | cuda:N (--device overrides)
    model: {card: ../assets/models/quickstart/card.json}   # or an inline `inference:` mapping
    data:
      root: ../assets/datasets/quickstart_heldout          # an ImageDataset folder
      max_examples: 44                 # stratified over the classes; null: every example
      batch_size: 16                   # images read and preprocessed at a time
      environments: null               # optional list: only these render environments
    task: classification               # classification | segmentation | equivalence
    smoothing:
      sigma: 0.25                      # noise standard deviation, [0, 1] pixel units
      n0: 100                          # selection samples (classification, segmentation; <= n)
      n: 1000                          # estimation samples
      alpha: 0.001                     # the certificate holds with probability >= 1 - alpha
      batch_size: 500                  # noisy copies per forward pass
    segmentation:                      # task: segmentation only
      tau: 0.75                        # per-pixel majority threshold
      methods: [holm, bonferroni, pixel_bonferroni, whole_mask]   # and kfwer (budget k)
      k: 1
      classes: auto                    # auto | binary | per_class (as threedb train / threedb attack)
    equivalence:                       # task: equivalence only
      score: accuracy                  # sbd | dice | iou | accuracy
      t: 0.1                           # distance threshold 1 - M < t
      use_labels: both                 # false | true | both
      classes: auto                    # segmentation models: how masks are labelled
    radii: null                        # report radii; null: sigma * [0, 0.5, 1, 1.5, 2]
    output: ../runs/certify_quickstart # --out overrides
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from threedb.evaluators.jobs.config import MODEL_PATH_KEYS, JobConfig, JobSchema, load_job_config
from threedb.robustness.smoothing import SmoothingError
from threedb.robustness.smoothing.equivalence import SCORES
from threedb.robustness.smoothing.segmentation import SEGMENTATION_METHODS
from threedb.robustness.smoothing.statistics import check_alpha, check_samples, check_sigma

_STRICT = ConfigDict(extra="forbid")
PATH_KEYS = (("data", "root"), ("output",), *MODEL_PATH_KEYS)
TASKS = ("classification", "segmentation", "equivalence")
#: Report radii when ``radii:`` is not given, as multiples of sigma.
DEFAULT_RADII_IN_SIGMA = (0.0, 0.5, 1.0, 1.5, 2.0)


def _smoothing_check(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except SmoothingError as exc:
        raise ValueError(str(exc)) from None


class SmoothingConfig(BaseModel):
    """``smoothing:``: Gaussian noise N(0, sigma^2 I) in [0, 1] pixel space and the Monte Carlo budget."""

    model_config = _STRICT
    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = Field(500, gt=0)

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma(cls, value: Any) -> float:
        return _smoothing_check(check_sigma, value)

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha(cls, value: Any) -> float:
        return _smoothing_check(check_alpha, value)

    @field_validator("n0", mode="before")
    @classmethod
    def _n0(cls, value: Any) -> int:
        return _smoothing_check(lambda v: check_samples(v, v) or v, value)

    @field_validator("n", mode="before")
    @classmethod
    def _n(cls, value: Any) -> int:
        return _smoothing_check(lambda v: check_samples(1, v) or v, value)


class SegmentationConfig(BaseModel):
    """``segmentation:``: SEGCERTIFY's threshold, the multiple-testing methods and baselines compared."""

    model_config = _STRICT
    tau: float = Field(0.75, ge=0.5, lt=1.0)
    methods: list[Literal["holm", "bonferroni", "kfwer", "pixel_bonferroni", "whole_mask"]] = Field(
        default_factory=lambda: ["holm", "bonferroni", "pixel_bonferroni", "whole_mask"], min_length=1)
    k: int = Field(1, ge=1)
    #: binary: 1 on the object mask; per_class: class index + 1; auto: binary for a 2-channel model
    classes: Literal["auto", "binary", "per_class"] = "auto"

    @field_validator("methods")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a method twice: {value}")
        return value


class EquivalenceConfig(BaseModel):
    """``equivalence:``: the score M, the threshold t on 1 - M, and whether to compare with the labels."""

    model_config = _STRICT
    score: Literal["sbd", "dice", "iou", "accuracy"] = "sbd"
    t: float = Field(0.1, gt=0)
    #: false: noisy outputs vs the clean output; true: the corrected ratio against the label; both: each
    use_labels: Union[bool, Literal["both"]] = "both"
    classes: Literal["auto", "binary", "per_class"] = "auto"

    @property
    def modes(self) -> list[str]:
        """``without_labels`` and/or ``with_labels``, in report order."""
        if self.use_labels == "both":
            return ["without_labels", "with_labels"]
        return ["with_labels"] if self.use_labels else ["without_labels"]


class CertifySchema(JobSchema):
    task: Literal["classification", "segmentation", "equivalence"] = "classification"
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    segmentation: Optional[SegmentationConfig] = None
    equivalence: Optional[EquivalenceConfig] = None
    radii: Optional[list[float]] = Field(None, min_length=1)

    @field_validator("radii")
    @classmethod
    def _radii(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and any(r < 0 for r in value):
            raise ValueError(f"radii must be >= 0, got {value}")
        return value

    @property
    def report_radii(self) -> list[float]:
        """``radii:`` or sigma * (0, 0.5, 1, 1.5, 2)."""
        if self.radii is not None:
            return sorted(self.radii)
        return [round(self.smoothing.sigma * m, 6) for m in DEFAULT_RADII_IN_SIGMA]

    @property
    def seg(self) -> SegmentationConfig:
        return self.segmentation or SegmentationConfig()

    @property
    def equiv(self) -> EquivalenceConfig:
        return self.equivalence or EquivalenceConfig()


def load_certify_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> JobConfig[CertifySchema]:
    """Load and validate a certify job config; errors name the file and the key."""
    config = load_job_config(path, CertifySchema, path_keys=PATH_KEYS, overrides=overrides)
    schema = config.schema
    if schema.task != "equivalence":   # local equivalence draws no selection samples: n0 is unused there
        try:
            check_samples(schema.smoothing.n0, schema.smoothing.n)
        except SmoothingError as exc:
            raise config.error("smoothing.n0", str(exc), value=schema.smoothing.n0,
                               expected=f"n0 <= smoothing.n ({schema.smoothing.n})") from None
    for section in ("segmentation", "equivalence"):
        if getattr(schema, section) is not None and schema.task != section:
            raise config.error(section, f"{section}: applies to task: {section} only (this job has task: "
                               f"{schema.task})", value=config.resolved.get(section),
                               expected=f"task: {section}, or no {section}: section")
    return config


__all__ = ["CertifySchema", "EquivalenceConfig", "SCORES", "SEGMENTATION_METHODS", "SegmentationConfig",
           "SmoothingConfig", "TASKS", "load_certify_config"]
