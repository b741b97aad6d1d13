"""The feature space a projection job measures MMD in: a fixed random convolutional encoder (the thesis'
choice for vision, seeded) or a layer of a given model (its penultimate layer by default)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from threedb.evaluators.jobs.config import JobConfig, model_spec
from threedb.evaluators.jobs.data import JobModel, iterate_batches, load_job_model
from threedb.evaluators.jobs.progress import progress
from threedb.evaluators.preprocess import Preprocess
from threedb.evaluators.project.config import ProjectSchema
from threedb.evaluators.project.data import Side
from threedb.robustness.projection import RandomConvEncoder, extract_features, penultimate_features


@dataclass
class FeatureSpace:
    """How images become features: ``encoder`` (random) or ``model`` + ``layer``, after ``preprocess``
    (resize to the resolution, scale to ``[0, 1]``)."""

    kind: str
    preprocess: Preprocess
    encoder: Optional[nn.Module] = None
    model: Optional[JobModel] = None
    layer: Optional[str] = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "resolution": list(self.preprocess.resolution or ())}
        if self.model is not None:
            out.update(self.model.describe(), layer=self.layer)
        return out

    def __call__(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        if self.encoder is not None:
            return extract_features(self.encoder, x, batch_size=batch_size)
        assert self.model is not None and self.layer is not None
        return penultimate_features(self.model.model, x, self.layer, batch_size=batch_size)


def default_layer(model: nn.Module) -> Optional[str]:
    """The submodule whose output feeds the model's last ``nn.Linear``: the child before it in the
    ``nn.Sequential`` that holds it (``None`` when the last Linear is not such a child)."""
    names = [(name, module) for name, module in model.named_modules()]
    linear = [name for name, module in names if isinstance(module, nn.Linear)]
    if not linear or "." not in linear[-1]:
        return None
    parent_name, child = linear[-1].rsplit(".", 1)
    parent = dict(names)[parent_name]
    if not isinstance(parent, nn.Sequential):
        return None
    children = [n for n, _ in parent.named_children()]
    position = children.index(child)
    return f"{parent_name}.{children[position - 1]}" if position > 0 else None


def feature_space(config: JobConfig[ProjectSchema], device: torch.device) -> FeatureSpace:
    """Build the ``features:`` space on ``device``; a bad model or layer is a config error naming the key."""
    f = config.schema.features
    if f.type == "random":
        seed = config.schema.seed if f.seed is None else f.seed
        encoder = RandomConvEncoder(3, width=f.width, depth=f.depth, out_features=f.out_features, seed=seed).to(device)
        return FeatureSpace("random", Preprocess(None, None, (f.resolution, f.resolution)), encoder=encoder)
    spec, base_dir = model_spec(config.schema.model or {}, config)
    job_model = load_job_model(spec, base_dir=base_dir, device=device, file=config.file_of("model"), key="model")
    job_model.card = (config.schema.model or {}).get("card")
    names = [n for n, _ in job_model.model.named_modules() if n]
    layer = f.layer if f.layer is not None else default_layer(job_model.model)
    if layer is None:
        raise config.error("features.layer", "cannot tell the model's penultimate layer (its last Linear is not "
                           f"inside an nn.Sequential): name the submodule, one of {names[:12]}")
    if layer not in names:
        raise config.error("features.layer", f"the model has no submodule {layer!r} (it has "
                           f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''})", value=layer)
    return FeatureSpace("model", job_model.preprocess, model=job_model, layer=layer)


def side_features(space: FeatureSpace, side: Side, device: torch.device, batch_size: int, *,
                  quiet: bool = False) -> torch.Tensor:
    """Features (``N x D`` float32, CPU) of the chosen samples of ``side``, in order."""
    bar = progress(len(side), desc=f"features ({side.key})") if not quiet else None
    out = []
    try:
        for batch in iterate_batches(side.dataset, side.indices, space.preprocess, batch_size, device):
            out.append(space(batch.x, batch_size).float())
            if bar is not None:
                bar.update(len(batch.ids))
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out)


__all__ = ["FeatureSpace", "default_layer", "feature_space", "side_features"]
