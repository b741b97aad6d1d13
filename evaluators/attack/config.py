"""The config of ``threedb attack CONFIG`` (YAML; ``base_config:`` chains and ``--set`` work; docs/attacks.md).

::

    seed: 0
    device: auto                       # auto | cpu | cuda | cuda:N (--device overrides)
    model: {card: ../assets/models/quickstart/card.json}   # or an inline `inference:` mapping
    data:
      root: ../assets/datasets/quickstart_heldout          # an ImageDataset folder
      max_examples: 110                # stratified over the classes; null: every example
      batch_size: 32
      environments: null               # optional list: only these render environments
    task: classification               # classification | segmentation
    segmentation:                      # task: segmentation only (docs/attacks.md)
      classes: auto                    # auto | binary (object = 1) | per_class (class index + 1)
      worst: f_measure                 # the score whose per-example minimum is the worst case
    threat: {norm: linf, eps: 2/255}   # eps: a number or "a/b"; linf eps in [0, 1]
    attacks:                           # run in order on every example; the worst case is reported
      - {type: fgsm}
      - {type: pgd, steps: 10}
      - {type: apgd, steps: 20}        # loss: ce | dlr
      - {type: apgdt, steps: 20, target_classes: 3}
      - {type: square, queries: 300}
      # task: segmentation only: target: background runs fgsm/pgd/apgd (ce) as object removal
      - {type: pgd, steps: 10, step_size: 0.0157, schedule: cosine, target: background}   # "pgd-removal"
    defense: null                      # optional input transform {module|file, class, args} before the model
    bpda: false                        # gradients through `defense` by straight-through (BPDA)
    eot: null                          # {samples: 10, average: probs}: expectation over a randomized model
    grid: {examples: 16}
    output: ../runs/attack_quickstart  # --out overrides
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from threedb.evaluators.jobs.config import MODEL_PATH_KEYS, JobConfig, JobSchema, load_job_config
from threedb.robustness.attacks import APGD, APGDT, FGSM, PGD, Attack, AttackError, Square, object_removal
from threedb.robustness.attacks.base import check_budget

_STRICT = ConfigDict(extra="forbid")

#: ``type:`` of an attack entry -> its class.
ATTACK_TYPES: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "apgd": APGD, "apgdt": APGDT, "square": Square}
#: Constructor arguments the job sets itself (one threat model per job, seeds per batch).
JOB_ARGS = frozenset({"norm", "eps", "task", "seed", "targeted", "gradient_check"})
PATH_KEYS = (("data", "root"), ("output",), ("defense", "file"), *MODEL_PATH_KEYS)
#: ``target:`` values of an attack entry (task: segmentation) -> the name suffix they add.
TARGETS = {"background": "removal"}
#: The attack types that can run towards a target (targeted cross-entropy).
TARGETABLE = ("fgsm", "pgd", "apgd")


def parse_eps(value: Any) -> float:
    """A budget as a number or a fraction string (``"8/255"``)."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"must be a number or a fraction like 8/255, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number or a fraction like 8/255, got {value!r}")
    return float(value)


class ThreatConfig(BaseModel):
    model_config = _STRICT
    norm: Literal["linf", "l2"] = "linf"
    eps: float

    @field_validator("eps", mode="before")
    @classmethod
    def _eps(cls, value: Any, info: Any) -> float:
        eps = parse_eps(value)
        try:
            check_budget(info.data.get("norm", "linf"), eps)
        except AttackError as exc:
            raise ValueError(str(exc)) from None
        return eps


class EOTConfig(BaseModel):
    model_config = _STRICT
    samples: int = Field(10, gt=0)
    average: Literal["probs", "logits"] = "probs"


class DefenseConfig(BaseModel):
    """An input transform (``nn.Module`` or callable factory) applied before the model: the defence."""

    model_config = _STRICT
    module: Optional[str] = None
    file: Optional[str] = None
    # `class` is a Python keyword: the attribute is cls, the config key class
    cls: str = Field(alias="class")
    args: dict[str, Any] = Field(default_factory=dict)


#: The per-example segmentation scores (``threedb.robustness.metrics.segmentation_scores``), in report order.
SEGMENTATION_METRICS = ("pixel_accuracy", "iou", "sbd", "f_measure")


class SegmentationConfig(BaseModel):
    """``segmentation:``: the label convention of the masks and the score that defines the worst case."""

    model_config = _STRICT
    #: binary: 1 on the object mask, 0 elsewhere; per_class: class index + 1 on the mask (as
    #: ``threedb train``'s ``segmentation.classes``); auto: binary for a 2-channel model, else per_class
    classes: Literal["auto", "binary", "per_class"] = "auto"
    #: per example the worst case is the clean input or attack output with the lowest of this score
    worst: Literal["pixel_accuracy", "iou", "sbd", "f_measure"] = "f_measure"


class GridConfig(BaseModel):
    model_config = _STRICT
    examples: int = Field(16, ge=0, le=64)


class AttackSchema(JobSchema):
    task: Literal["classification", "segmentation"] = "classification"
    segmentation: Optional[SegmentationConfig] = None
    threat: ThreatConfig
    attacks: list[dict[str, Any]] = Field(min_length=1)
    defense: Optional[DefenseConfig] = None
    bpda: bool = False
    eot: Optional[EOTConfig] = None
    grid: GridConfig = Field(default_factory=GridConfig)


@dataclass(frozen=True)
class AttackSpec:
    """One validated ``attacks[i]`` entry: its report name, class and keyword arguments (``args`` keeps
    ``target:`` when the entry has one, so the report's settings show it)."""

    index: int
    name: str
    type: str
    cls: type[Attack]
    args: dict[str, Any]

    @property
    def target(self) -> Optional[str]:
        """``background`` for an object-removal entry (``target: background``), else None."""
        return self.args.get("target")

    def build(self, *, norm: str, eps: float, task: Any, seed: int) -> Attack:
        """The attack for one batch (``seed`` differs per batch); a ``target: background`` entry is the
        targeted attack towards the all-background mask with the untargeted goal (object removal)."""
        kwargs = {k: v for k, v in self.args.items() if k != "target"}
        kwargs.update(eps=eps, task=task, seed=seed)
        if self.cls is not Square:
            kwargs["norm"] = norm
        if self.target is None:
            return self.cls(**kwargs)
        return object_removal(self.cls(**kwargs, targeted=True), name=self.name)


def default_name(kind: str, args: Mapping[str, Any]) -> str:
    if kind == "apgd":
        base = f"apgd-{args.get('loss', 'ce')}"
    else:
        base = {"apgdt": "apgd-t"}.get(kind, kind)
    target = args.get("target")
    return f"{base}-{TARGETS[target]}" if target in TARGETS else base


def attack_specs(config: JobConfig[AttackSchema]) -> list[AttackSpec]:
    """Validate every ``attacks[i]`` entry (type, argument names and values) by building it once."""
    schema = config.schema
    specs: list[AttackSpec] = []
    names: set[str] = set()
    for i, entry in enumerate(schema.attacks):
        key = f"attacks[{i}]"
        kind = entry.get("type")
        if kind not in ATTACK_TYPES:
            raise config.error(f"{key}.type" if "type" in entry else key,
                               f"unknown attack type {kind!r}" if "type" in entry else "needs a type:",
                               value=kind, expected=f"one of {', '.join(ATTACK_TYPES)}")
        cls = ATTACK_TYPES[kind]
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in JOB_ARGS | {"self"}]
        args = {k: v for k, v in entry.items() if k not in ("type", "name")}
        if "target" in args:
            _check_target(config, key, kind, args["target"])
        for arg in (a for a in args if a != "target"):
            if arg not in allowed:
                why = (f"{arg} is set by the job for every attack (threat.norm/threat.eps, seed, task)"
                       if arg in JOB_ARGS else f"unknown argument {arg!r} for {kind}")
                raise config.error(f"{key}.{arg}", why, value=args[arg], expected=f"one of {', '.join(allowed)}")
        if kind == "square" and schema.threat.norm != "linf":
            raise config.error(f"{key}.type", "the Square attack is L-inf only; threat.norm is l2",
                               value=kind, expected="a gradient attack (fgsm, pgd, apgd, apgdt) under l2")
        if schema.task == "segmentation":
            args = _segmentation_args(config, key, kind, args)
        name = entry.get("name") or default_name(kind, args)
        if not isinstance(name, str) or name in ("clean", "worst"):
            raise config.error(f"{key}.name", "must be a string other than clean and worst", value=name)
        if "name" not in entry:
            base, n = name, 2
            while name in names:
                name, n = f"{base}-{n}", n + 1
        elif name in names:
            raise config.error(f"{key}.name", f"attack name {name!r} is used twice", value=name)
        names.add(name)
        spec = AttackSpec(i, name, kind, cls, args)
        try:
            from threedb.robustness.attacks import Classification, Segmentation

            task = Segmentation() if schema.task == "segmentation" else Classification()
            spec.build(norm=schema.threat.norm, eps=schema.threat.eps, task=task, seed=0)
        except AttackError as exc:
            bad = next((a for a in args if a in str(exc)), None)
            raise config.error(f"{key}.{bad}" if bad else key, str(exc), value=args.get(bad) if bad else kind) from None
        except (TypeError, ValueError) as exc:
            raise config.error(key, f"bad arguments for {kind}: {exc}", value=args) from None
        specs.append(spec)
    return specs


def _check_target(config: JobConfig[AttackSchema], key: str, kind: str, target: Any) -> None:
    """``attacks[i].target``: segmentation only, ``background`` only, on an attack that can be targeted."""
    if config.schema.task != "segmentation":
        raise config.error(f"{key}.target", "target: (object removal towards the all-background mask) is for "
                           "task: segmentation only; for a classifier use apgdt (targeted DLR, untargeted goal)",
                           value=target, expected="no target: under task: classification")
    if target not in TARGETS:
        raise config.error(f"{key}.target", f"unknown target {target!r}", value=target,
                           expected=f"one of {', '.join(TARGETS)} (every pixel pushed to class 0)")
    if kind not in TARGETABLE:
        raise config.error(f"{key}.target", f"{kind} cannot run towards a target", value=target,
                           expected=f"target: on {', '.join(TARGETABLE)} (loss ce)")


def _segmentation_args(config: JobConfig[AttackSchema], key: str, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``attacks[i]`` for ``task: segmentation``: the pixel-wise cross-entropy is the only
    loss (DLR and the margin need one logit vector per image); Square's loss defaults to ce there."""
    if kind == "apgdt":
        raise config.error(f"{key}.type", "APGD-T (targeted DLR towards the top other classes) is for "
                           "classification only, not task: segmentation", value=kind,
                           expected="fgsm, pgd, apgd or square with loss: ce")
    loss = args.get("loss", "ce")
    if loss != "ce":
        raise config.error(f"{key}.loss", f"the {loss} loss is for classification only; task: segmentation "
                           "attacks the per-pixel cross-entropy", value=loss, expected="ce (or leave loss unset)")
    return {**args, "loss": "ce"} if kind == "square" else args


def load_attack_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> JobConfig[AttackSchema]:
    """Load and validate an attack job config (attacks included); errors name the file and the key."""
    config = load_job_config(path, AttackSchema, path_keys=PATH_KEYS, overrides=overrides)
    attack_specs(config)
    if config.schema.segmentation is not None and config.schema.task != "segmentation":
        raise config.error("segmentation", "segmentation: applies to task: segmentation only",
                           value=config.resolved.get("segmentation"), expected="task: segmentation, or no segmentation:")
    defense = config.schema.defense
    if defense is not None and (defense.module is None) == (defense.file is None):
        raise config.error("defense", "name the transform with exactly one of module: or file:", value=None)
    if config.schema.bpda and defense is None:
        raise config.error("bpda", "BPDA approximates the gradient of a non-differentiable input transform: "
                           "give that transform as defense: {module|file, class, args}", value=True)
    return config


__all__ = ["ATTACK_TYPES", "AttackSchema", "AttackSpec", "SEGMENTATION_METRICS", "SegmentationConfig", "TARGETS",
           "attack_specs", "load_attack_config", "parse_eps"]
