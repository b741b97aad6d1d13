"""The model of a verify job as the verifier sees it: the job's pixel-space model (normalisation inside)
unwrapped to its ``nn.Sequential`` chain and converted with :func:`~threedb.robustness.verification.network.from_torch`,
checked to compute what the model computes, and the torch model itself as the check of every
counterexample (``sat`` is only reported for an input the original model misclassifies)."""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from threedb.evaluators.jobs.config import JobConfig
from threedb.evaluators.jobs.data import JobModel, TensorOutput

#: The converted network may differ from the float32 model by rounding only: |dy| <= TOLERANCE (1 + |y|).
TOLERANCE = 1e-3


def unwrap(module: nn.Module) -> nn.Module:
    """The module under the job's output adapters (:class:`TensorOutput`): ``Normalized(chain)``, which
    :func:`from_torch` unrolls into its normalisation and the chain's layers."""
    while isinstance(module, TensorOutput):
        module = module.model
    return module


def verifiable_network(config: JobConfig[Any], job_model: JobModel, input_shape: tuple[int, ...],
                       probe: torch.Tensor) -> Any:
    """The job model as a :class:`~threedb.robustness.verification.network.Network` on ``input_shape``
    (C x H x W) images in [0, 1]; ``probe`` (a few such images, N x C x H x W) checks the conversion.
    A model that is not a supported chain, or whose conversion computes something else, is one error
    naming the model and the layer."""
    from threedb.robustness.verification.network import NetworkError, from_torch

    source = job_model.loaded.source
    module = copy.deepcopy(unwrap(job_model.model)).cpu().eval()
    try:
        network = from_torch(module, input_shape, source=source)
    except NetworkError as exc:
        raise config.error("model", f"model {source} cannot be verified: {exc}. The verifier takes an "
                           "nn.Sequential chain of those layers (module:/class: returning one, and weights:)",
                           value=None) from None
    with torch.no_grad():
        expected = module(probe.detach().cpu().float()).double().numpy()
    got = network(probe.detach().cpu().double().reshape(probe.shape[0], -1).numpy())
    error = float(np.max(np.abs(got - expected) / (1.0 + np.abs(expected))))
    if not error <= TOLERANCE:
        raise config.error("model", f"model {source}: its conversion for the verifier computes other outputs "
                           f"than the model (relative difference {error:.3g} on the first images); a module "
                           "whose forward() does more than run its layers in order cannot be verified", value=None)
    return network


def torch_check(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """``check(x) -> logits`` of the *original* job model (float32, on its device) for a flat input."""

    def check(x: np.ndarray) -> np.ndarray:
        batch = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(1, *input_shape), device=device)
        with torch.no_grad():
            return model(batch).double().cpu().numpy().reshape(-1)

    return check


__all__ = ["TOLERANCE", "torch_check", "unwrap", "verifiable_network"]
