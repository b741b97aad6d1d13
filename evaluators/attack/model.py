"""The model an attack job attacks: the loaded pixel-space model, behind an optional defence transform,
BPDA and EOT wrappers, and its check against the dataset."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from torch import nn

from threedb.evaluators.attack.config import AttackSchema
from threedb.evaluators.jobs.config import JobConfig
from threedb.evaluators.jobs.data import JobModel
from threedb.robustness.attacks import BPDA, EOT
from threedb.sim.plugins import load_file_module


class _Defended(nn.Module):
    """``classifier(transform(x))`` with gradients as the transform gives them (possibly none)."""

    def __init__(self, classifier: nn.Module, transform: Any) -> None:
        super().__init__()
        self.classifier, self.transform = classifier, transform

    def forward(self, x: Any) -> Any:
        return self.classifier(self.transform(x))


def load_defense(config: JobConfig[AttackSchema]) -> Any:
    """The ``defense:`` transform, built from its module or file and class with ``args``."""
    spec = config.schema.defense
    assert spec is not None
    if spec.module is not None:
        try:
            module = importlib.import_module(spec.module)
        except ImportError as exc:
            raise config.error("defense.module", f"cannot import module {spec.module!r}: {exc}",
                               value=spec.module) from None
    else:
        path = Path(str(spec.file))
        if not path.is_file():
            raise config.error("defense.file", f"defence source file not found: {path}", value=spec.file)
        try:
            module = load_file_module(path)
        except Exception as exc:  # any error in user code: report it as the config's problem
            raise config.error("defense.file", f"cannot import {path}: {type(exc).__name__}: {exc}",
                               value=spec.file) from None
    factory = getattr(module, spec.cls, None)
    if not callable(factory):
        raise config.error("defense.class", f"{spec.module or spec.file} has no class or function {spec.cls!r}",
                           value=spec.cls)
    try:
        transform = factory(**spec.args)
    except Exception as exc:  # a bad argument to user code
        raise config.error("defense.args", f"{spec.cls}(**args) failed: {type(exc).__name__}: {exc}",
                           value=spec.args) from None
    if isinstance(transform, nn.Module):
        transform.eval()
    return transform


def attacked_model(config: JobConfig[AttackSchema], job_model: JobModel) -> nn.Module:
    """The model the attacks see: ``defense`` (BPDA when asked), then ``eot`` averaging, around the model."""
    schema = config.schema
    model: nn.Module = job_model.model
    if schema.defense is not None:
        transform = load_defense(config)
        if isinstance(transform, nn.Module):
            transform = transform.to(job_model.device)
        model = BPDA(model, transform) if schema.bpda else _Defended(model, transform)
    if schema.eot is not None:
        model = EOT(model, samples=schema.eot.samples, average=schema.eot.average)
    return model.eval()
