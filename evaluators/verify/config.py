"""The config of ``threedb verify CONFIG`` (YAML; ``base_config:`` chains and ``--set`` work; docs/verify.md).

::

    seed: 0
    device: auto                       # the model's device (clean prediction, the check of counterexamples)
    model: {card: ../assets/models/mnist_rs/card.json}   # or an inline `inference:` mapping
    data:
      root: ../assets/datasets/mnist_heldout             # an ImageDataset folder
      max_examples: 20                 # stratified over the classes; null: every example
      batch_size: 32                   # images read and preprocessed at a time
    verification:
      eps: 0.1                         # L-inf radius in [0, 1] pixel units (a number or "a/b")
      timeout: 30                      # seconds per example (the whole eps-ball question)
      targets: null                    # optional class list: only these count as adversarial
      attack: true                     # PGD on the ball first (sat cheaply), then bounds and the MILP
      attack_steps: 40
      attack_restarts: 3
      symbolic: true                   # backward linear (CROWN / DeepPoly) bounds on top of intervals
      tighten: lp                      # none | lp | milp: progressive per-ReLU bound tightening
      progressive: true
      milp_unit_time: 0.5
      restricted_domain: true
      asymmetric: true
      complete: bab                    # bab (branch and bound on ReLU splits) | milp: the last, complete step
      distortion: none                 # none | linf | l1: also the minimum adversarial distortion
      distortion_method: milp          # milp (one MILP) | bisect (linf: verification at shrinking radii)
      max_eps: null                    # its search radius (default eps)
      distortion_timeout: null         # seconds for it (default timeout)
    output: ../runs/verify_quickstart  # --out overrides
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from threedb.evaluators.attack.config import parse_eps
from threedb.evaluators.jobs.config import MODEL_PATH_KEYS, JobConfig, JobSchema, load_job_config

PATH_KEYS = (("data", "root"), ("output",), *MODEL_PATH_KEYS)


class VerificationConfig(BaseModel):
    """``verification:``: the question (eps-ball, targets), how hard to try, and the minimum distortion."""

    model_config = ConfigDict(extra="forbid")
    eps: float
    timeout: float = Field(60.0, gt=0)
    targets: Optional[list[int]] = Field(None, min_length=1)
    attack: bool = True
    attack_steps: int = Field(40, gt=0)
    attack_restarts: int = Field(3, gt=0)
    symbolic: bool = True
    tighten: Literal["none", "lp", "milp"] = "lp"
    progressive: bool = True
    milp_unit_time: float = Field(0.5, gt=0)
    restricted_domain: bool = True
    asymmetric: bool = True
    complete: Literal["bab", "milp"] = "bab"
    distortion: Literal["none", "linf", "l1"] = "none"
    #: milp: one MILP minimising the distance; bisect (linf only): complete verification at shrinking radii
    distortion_method: Literal["milp", "bisect"] = "milp"
    max_eps: Optional[float] = None
    distortion_timeout: Optional[float] = Field(None, gt=0)

    @field_validator("eps", "max_eps", mode="before")
    @classmethod
    def _eps(cls, value: Any) -> Any:
        if value is None:
            return None
        eps = parse_eps(value)
        if not 0 <= eps <= 1:
            raise ValueError(f"an L-inf radius in [0, 1] pixel units, got {eps:g}")
        return eps

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: Optional[list[int]]) -> Optional[list[int]]:
        if value is not None and (len(set(value)) != len(value) or any(t < 0 for t in value)):
            raise ValueError(f"distinct class indices >= 0, got {value}")
        return value

    @property
    def search_radius(self) -> float:
        """``max_eps``, or ``eps`` when not given."""
        return self.eps if self.max_eps is None else self.max_eps

    @property
    def distortion_seconds(self) -> float:
        return self.timeout if self.distortion_timeout is None else self.distortion_timeout

    def options(self, *, seed: int, timeout: Optional[float] = None) -> Any:
        """The :class:`~threedb.robustness.verification.verifier.VerifierOptions` of one example."""
        from threedb.robustness.verification.verifier import VerifierOptions

        return VerifierOptions(timeout=self.timeout if timeout is None else timeout, attack=self.attack,
                               attack_steps=self.attack_steps, attack_restarts=self.attack_restarts,
                               symbolic=self.symbolic, tighten=self.tighten, progressive=self.progressive,
                               milp_unit_time=self.milp_unit_time, restricted_domain=self.restricted_domain,
                               asymmetric=self.asymmetric, complete=self.complete, threads=1, seed=seed)


class VerifySchema(JobSchema):
    verification: VerificationConfig


def load_verify_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> JobConfig[VerifySchema]:
    """Load and validate a verify job config; errors name the file and the key."""
    config = load_job_config(path, VerifySchema, path_keys=PATH_KEYS, overrides=overrides)
    v = config.schema.verification
    for key in ("max_eps", "distortion_timeout"):
        if getattr(v, key) is not None and v.distortion == "none":
            raise config.error(f"verification.{key}", f"{key} applies to the minimum distortion, which is off "
                               "(distortion: none)", value=getattr(v, key),
                               expected=f"distortion: linf or l1, or no {key}")
    if v.distortion_method == "bisect" and v.distortion != "linf":
        raise config.error("verification.distortion_method", "bisect brackets the L-inf minimum distortion only",
                           value=v.distortion_method, expected=f"distortion: linf, or distortion_method: milp "
                           f"(distortion is {v.distortion})")
    if v.max_eps is not None and v.max_eps <= 0:
        raise config.error("verification.max_eps", "the search radius must be > 0", value=v.max_eps)
    return config


__all__ = ["VerificationConfig", "VerifySchema", "load_verify_config"]
