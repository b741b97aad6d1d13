"""The training config of ``threedb train CONFIG`` (YAML, ``base_config:`` chains and ``--set`` work).

::

    seed: 0
    task: classification          # classification | segmentation (on the dataset's object masks)
    segmentation: {classes: binary}   # binary (object = 1) | per_class (class index + 1 on the object)
    data:
      train: DIR                  # a dataset: `threedb dataset export` output or an image-folder tree
      test: DIR                   # optional: evaluated after every epoch; its accuracy goes on the card
      train_environments: null    # optional: keep only these environments' samples (e.g. [courtyard])
      test_environments: null
      cache: false                # keep decoded images in memory (small datasets)
    model:                        # an `inference:` mapping (docs/run.md): how to build the model, its
      module: threedb.evaluators.architectures     # preprocessing (resolution, normalization), and
      class: SmallResNet                           # optionally weights: to start from
      args: {width: 32}           # num_classes is set from the dataset's class list
      resolution: 64
      normalization: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
    training:
      epochs: 15
      batch_size: 64
      optimizer: adamw            # adamw | sgd (momentum 0.9, nesterov)
      lr: 0.003
      weight_decay: 0.0005
      schedule: onecycle          # onecycle | cyclic (triangular) | cosine | constant (stepped every batch)
      objective: cross_entropy    # cross_entropy | pgd | fbf | fgsm | trades | fbf_trades | gaussian | relu_stability
      objective_args: {label_smoothing: 0.05}     # adversarial: eps, eps_ramp, steps, step_size, beta, l1 ...;
                                  # relu_stability: + rs_weight, rs_mode, rs_eps; gaussian: sigma
      prune: {weights: 1e-3, relus: 0.1}          # optional, after training: |w| < 1e-3 -> 0; ReLUs active on
                                  # < 10% of the training images removed (threedb.robustness.relu_stability)
      robust_check:               # optional: PGD accuracy after every epoch, early stop on a collapse
        {eps: null, steps: 10, images: 128, tolerance: 0.2, early_stop: true}
      augment: {crop_scale: [0.7, 1.0], flip: true, color_jitter: 0.3}
      device: auto                # auto | cpu | cuda | cuda:N
      threads: null               # torch CPU threads (null: torch's default)
    output: DIR                   # checkpoint.pt, log.jsonl, model.pt, card.json, MODEL_CARD.md
    export: DIR                   # optional: where the final weights, card and label files are copied
    card:                         # optional: name, description, and the commands that made the data
      name: quickstart
      data_commands: ["threedb run ...", "threedb dataset export ..."]
      robust_eval:                # robustness on the card (default: on for adversarial objectives)
        {eps: null, steps: 50, restarts: 10, max_examples: null, ensemble: true}
      relu_stability:             # unstable ReLUs per layer, naive and improved bounds (default: on for
        {eps: null, max_examples: null}   # relu_stability objectives and pruned models)

Relative paths resolve against the file that wrote them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from threedb.evaluators.jobs.config import load_job_config

_STRICT = ConfigDict(extra="forbid")
#: Keys holding paths, resolved against the config file that wrote them.
PATH_KEYS = (("data", "train"), ("data", "test"), ("output",), ("export",),
             ("model", "weights"), ("model", "file"), ("model", "label_map"),
             ("model", "torchscript"), ("model", "onnx"))


class DataConfig(BaseModel):
    model_config = _STRICT
    train: str
    test: Optional[str] = None
    #: keep only the samples of these environments (file name or stem) of ``train`` / ``test``
    train_environments: Optional[list[str]] = None
    test_environments: Optional[list[str]] = None
    cache: bool = False           #: keep decoded images in memory (small datasets: decoded once per run)


class AugmentConfig(BaseModel):
    """Training-time augmentation, applied to the uint8 render before the model's preprocessing."""

    model_config = _STRICT
    crop_scale: tuple[float, float] = (0.7, 1.0)   #: random-resized-crop area range (1, 1 = off)
    flip: bool = True                              #: random horizontal flip
    color_jitter: float = 0.3                      #: brightness/contrast/saturation jitter (0 = off)

    @field_validator("crop_scale")
    @classmethod
    def _crop(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError("must be [lo, hi] with 0 < lo <= hi <= 1")
        return value


class RobustCheckConfig(BaseModel):
    """A PGD check after every epoch on a fixed small batch (held-out when there is a test set), with
    early stopping against catastrophic overfitting (Wong et al. 2020)."""

    model_config = _STRICT
    eps: Optional[float] = Field(None, ge=0, le=1)   #: default: the objective's eps
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(10, gt=0)
    step_size: Optional[float] = Field(None, gt=0)   #: default: 2.5 eps / steps
    images: int = Field(128, gt=0)                   #: evenly spaced over the test (else training) set
    tolerance: float = Field(0.2, ge=0, le=1)        #: stop when PGD accuracy < best - tolerance
    early_stop: bool = True                          #: stop and restore the best epoch's weights


class PruneConfig(BaseModel):
    """Pruning after training, before the final evaluation and export (thesis ch. 6; needs a chain of
    Linear / Conv2d / ReLU / Flatten, :func:`threedb.robustness.relu_stability.relu_chain`)."""

    model_config = _STRICT
    weights: Optional[float] = Field(None, gt=0)         #: zero every weight with |w| below this
    relus: Optional[float] = Field(None, gt=0, lt=1)     #: remove ReLUs active on fewer training images
    max_examples: Optional[int] = Field(None, gt=0)      #: training images the activity is measured on


class TrainingConfig(BaseModel):
    model_config = _STRICT
    epochs: int = Field(15, gt=0)
    batch_size: int = Field(64, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["onecycle", "cyclic", "cosine", "constant"] = "onecycle"
    objective: str = "cross_entropy"
    objective_args: dict[str, Any] = Field(default_factory=dict)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    robust_check: Optional[RobustCheckConfig] = None
    prune: Optional[PruneConfig] = None
    device: str = "auto"
    threads: Optional[int] = Field(None, gt=0)


class RobustEvalConfig(BaseModel):
    """The robustness figures of the model card, measured on the test set after training."""

    model_config = _STRICT
    enabled: Optional[bool] = None                 #: default: on for adversarial objectives
    eps: Optional[float] = Field(None, ge=0)       #: default: the objective's eps
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(50, gt=0)                   #: PGD steps (step size 2.5 eps / steps)
    restarts: int = Field(10, gt=0)                #: PGD random restarts
    max_examples: Optional[int] = Field(None, gt=0)  #: evenly spaced test images (null: all)
    ensemble: bool = True                          #: also PGD + APGD-CE + APGD-T + Square, worst case
    apgd_steps: int = Field(100, gt=0)
    square_queries: int = Field(1000, gt=0)
    batch_size: int = Field(128, gt=0)
    seed: int = 0


class StabilityConfig(BaseModel):
    """Unstable ReLUs on the card: per layer, per example, with naive and improved interval bounds on the
    test set (:mod:`threedb.robustness.relu_stability`)."""

    model_config = _STRICT
    enabled: Optional[bool] = None                 #: default: on for relu_stability objectives and pruning
    eps: Optional[float] = Field(None, ge=0, le=1)  #: default: the objective's eps
    max_examples: Optional[int] = Field(None, gt=0)  #: evenly spaced test images (null: all)
    batch_size: int = Field(50, gt=0)


class SegmentationConfig(BaseModel):
    model_config = _STRICT
    #: binary: 1 on the object mask, 0 elsewhere; per_class: class index + 1 on the mask
    classes: Literal["binary", "per_class"] = "binary"


class CardConfig(BaseModel):
    """What the model card says beyond what training measures."""

    model_config = _STRICT
    robust_eval: RobustEvalConfig = Field(default_factory=RobustEvalConfig)
    relu_stability: StabilityConfig = Field(default_factory=StabilityConfig)
    name: Optional[str] = None                     #: default: the output folder's name
    description: str = ""
    #: the commands that made the datasets (the card adds the `threedb train` command itself)
    data_commands: list[str] = Field(default_factory=list)


class TrainSchema(BaseModel):
    model_config = _STRICT
    seed: int = 0
    task: Literal["classification", "segmentation"] = "classification"
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    data: DataConfig
    model: dict[str, Any]
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: str
    export: Optional[str] = None
    card: CardConfig = Field(default_factory=CardConfig)


@dataclass
class TrainConfig:
    """A validated training config: the schema plus where it came from."""

    source: Path
    schema: TrainSchema
    resolved: dict[str, Any]      #: the merged, path-resolved mapping (written beside the checkpoints)

    @property
    def base_dir(self) -> Path:
        return self.source.parent


def load_train_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Load, merge and validate a training config; errors name the file and the key."""
    job = load_job_config(path, TrainSchema, path_keys=PATH_KEYS, overrides=overrides)
    return TrainConfig(source=job.source, schema=job.schema, resolved=job.schema.model_dump(mode="json"))
