"""ReLU stability in ``threedb train``: the chain check before training, pruning after it
(``training.prune``) and the unstable-ReLU figures of the model card (``card.relu_stability``).

The algorithms are :mod:`threedb.robustness.relu_stability`; this module feeds them the loop's data.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from threedb.robustness.relu_stability import (StabilityError, live_relus, preactivation_bounds, prune_relus,
                                               prune_weights, relu_activity, relu_chain, relu_sites,
                                               unstable_counts)
from threedb.sim.errors import ConfigError


def wanted(schema: Any) -> bool:
    """Whether the card reports unstable ReLUs: asked for, or a relu_stability objective, or pruning."""
    enabled = schema.card.relu_stability.enabled
    if enabled is not None:
        return bool(enabled)
    return schema.training.objective == "relu_stability" or schema.training.prune is not None


def check_chain(model: nn.Module, *, file: Any, key: str) -> None:
    """A ConfigError naming ``key`` when ``model`` is not a chain the stability tools read."""
    try:
        relu_chain(model)
    except StabilityError as exc:
        raise ConfigError(f"{exc}; ReLU-stability training, pruning and unstable-ReLU counts need an "
                          "nn.Sequential of Linear, Conv2d, ReLU and Flatten (e.g. "
                          "threedb.evaluators.architectures.MnistCNN)", file=file, key=key) from None


def layer_names(model: nn.Module) -> list[str]:
    """A name per ReLU layer: ``<kind of the layer before><position>``, e.g. ``conv0``, ``linear5``."""
    names = []
    for site in relu_sites(relu_chain(model)):
        before = site.before
        names.append(f"{before.kind}{before.position}" if before is not None else f"relu{site.relu.position}")
    return names


def prune(model: nn.Module, train_data: Any, cfg: Any, device: torch.device) -> dict[str, Any]:
    """Prune ``model`` in place as ``cfg`` (a PruneConfig) says: small weights first, then the ReLUs
    rarely active on the (non-augmented) training images; returns the card's report."""
    from threedb.evaluators.training.robust import spaced_indices

    report: dict[str, Any] = {"weights_threshold": cfg.weights, "relus_min_active": cfg.relus}
    model.eval()
    if cfg.weights is not None:
        report["weights"] = prune_weights(model, cfg.weights)
    if cfg.relus is not None:
        indices = spaced_indices(len(train_data), cfg.max_examples)
        loader = DataLoader(Subset(train_data, indices), batch_size=256)
        activity = relu_activity(model, (x.to(device) for x, _ in loader))
        layers = prune_relus(model, activity, cfg.relus)
        report["relus"] = {"examples": len(indices), "inactive_half_only": True,
                           "layers": dict(zip(layer_names(model), layers))}
    return report


def stability_report(model: nn.Module, x: torch.Tensor, *, eps: float, batch_size: int,
                     source: str) -> dict[str, Any]:
    """Unstable ReLUs per layer (mean per example) on the ``eps``-boxes of ``x``, naive and improved;
    ReLUs that feed nothing (pruned by their outgoing weights) are not counted."""
    model.eval()
    live = live_relus(model, x[:1])
    out: dict[str, Any] = {"eps": eps, "examples": int(x.shape[0]), "from": source, "layers": layer_names(model),
                           "counting": "l_hat < 0 < u_hat on [max(x - eps, 0), min(x + eps, 1)], mean per example; "
                                       "ReLUs with all outgoing weights zero are not counted"}
    for mode in ("naive", "improved"):
        sums: list[float] | None = None
        neurons: list[int] = []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size]
                counts = unstable_counts(preactivation_bounds(model, xb, eps, mode), live)
                weighted = [c * xb.shape[0] for c in counts["per_layer"]]
                sums = weighted if sums is None else [a + b for a, b in zip(sums, weighted)]
                neurons = counts["neurons"]
        per_layer = [s / max(int(x.shape[0]), 1) for s in (sums or [])]
        out[mode] = {"per_layer": per_layer, "total": float(sum(per_layer))}
        out["neurons"] = neurons
    out["live_neurons"] = [int(m.sum()) for m in live]
    return out


def measure(model: nn.Module, data: Any, cfg: Any, *, eps: float, device: torch.device, source: str,
            stream: Any) -> dict[str, Any]:
    """:func:`stability_report` on ``cfg.max_examples`` evenly spaced items of ``data`` (non-augmented),
    with one progress line on ``stream``."""
    from threedb.evaluators.training.robust import spaced_indices, stack

    x, _ = stack(data, spaced_indices(len(data), cfg.max_examples))
    report = stability_report(model, x.to(device), eps=eps, batch_size=cfg.batch_size, source=source)
    print(f"[threedb train] unstable ReLUs at eps {eps:g} on {report['examples']} {source} images: naive "
          f"{report['naive']['total']:.1f}, improved {report['improved']['total']:.1f} per example (per layer "
          f"naive {[round(v, 1) for v in report['naive']['per_layer']]}, improved "
          f"{[round(v, 1) for v in report['improved']['per_layer']]})", file=stream, flush=True)
    return report
