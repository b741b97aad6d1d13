"""The training config of ``threedb train CONFIG`` (YAML, ``base_config:`` chains and ``--set`` work).

::

    seed: 0
    data:
      train: DIR                  # a dataset: `threedb dataset export` output or an image-folder tree
      test: DIR                   # optional: evaluated after every epoch; its accuracy goes on the card
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
      schedule: onecycle          # onecycle | cosine | constant (stepped every batch)
      objective: cross_entropy    # threedb.evaluators.training.objectives.OBJECTIVES
      objective_args: {label_smoothing: 0.05}
      augment: {crop_scale: [0.7, 1.0], flip: true, color_jitter: 0.3}
      device: auto                # auto | cpu | cuda | cuda:N
      threads: null               # torch CPU threads (null: torch's default)
    output: DIR                   # checkpoint.pt, log.jsonl, model.pt, card.json, MODEL_CARD.md
    export: DIR                   # optional: where the final weights, card and label files are copied
    card:                         # optional: name, description, and the commands that made the data
      name: quickstart
      data_commands: ["threedb run ...", "threedb dataset export ..."]

Relative paths resolve against the file that wrote them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from threedb.sim.config.loader import apply_overrides, load_chain, resolve_paths
from threedb.sim.config.schema import config_error_from_validation

_STRICT = ConfigDict(extra="forbid")
#: Keys holding paths, resolved against the config file that wrote them.
PATH_KEYS = (("data", "train"), ("data", "test"), ("output",), ("export",),
             ("model", "weights"), ("model", "file"), ("model", "label_map"),
             ("model", "torchscript"), ("model", "onnx"))


class DataConfig(BaseModel):
    model_config = _STRICT
    train: str
    test: Optional[str] = None


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


class TrainingConfig(BaseModel):
    model_config = _STRICT
    epochs: int = Field(15, gt=0)
    batch_size: int = Field(64, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    objective: str = "cross_entropy"
    objective_args: dict[str, Any] = Field(default_factory=dict)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    device: str = "auto"
    threads: Optional[int] = Field(None, gt=0)


class CardConfig(BaseModel):
    """What the model card says beyond what training measures."""

    model_config = _STRICT
    name: Optional[str] = None                     #: default: the output folder's name
    description: str = ""
    #: the commands that made the datasets (the card adds the `threedb train` command itself)
    data_commands: list[str] = Field(default_factory=list)


class TrainSchema(BaseModel):
    model_config = _STRICT
    seed: int = 0
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
    loaded = load_chain(path)
    data, prov = loaded.data, loaded.provenance
    if overrides:
        apply_overrides(data, prov, overrides)
    resolve_paths(data, prov, PATH_KEYS)
    try:
        schema = TrainSchema.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, prov, data, TrainSchema) from None
    return TrainConfig(source=loaded.files[-1], schema=schema, resolved=schema.model_dump(mode="json"))
