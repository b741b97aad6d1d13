"""Argument checks shared by the framework's modules: each raises :class:`FrameworkError` naming the value."""
from __future__ import annotations

import math

import torch

from threedb.robustness.framework.errors import FrameworkError

NORMS = ("linf", "l2")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise FrameworkError(f"unknown norm {norm!r}: use linf or l2")
    return norm


def check_count(value: int, name: str) -> int:
    """A positive integer (sample sizes, steps, epochs)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FrameworkError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (or >= 0 with ``allow_zero``)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
          and (float(value) >= 0 if allow_zero else float(value) > 0))
    if not ok:
        raise FrameworkError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def check_batch(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A non-empty floating ``NxCxHxW`` (or ``NxD``) batch of inputs in ``[0, 1]``."""
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim < 2:
        raise FrameworkError(f"{name} must be a float batch (N x ...), got {type(x).__name__} "
                             f"{tuple(getattr(x, 'shape', ()))}")
    if x.shape[0] == 0:
        raise FrameworkError(f"{name} is an empty batch (0 inputs)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0 or not math.isfinite(lo + hi):
        raise FrameworkError(f"{name} must lie in [0, 1] (found [{lo:.3g}, {hi:.3g}]); normalisation belongs "
                             "inside the model (threedb.robustness.models.Normalized)")
    return x


def check_labels(y: torch.Tensor, n: int) -> torch.Tensor:
    if not torch.is_tensor(y) or y.dtype not in (torch.int64, torch.int32) or tuple(y.shape) != (n,):
        raise FrameworkError(f"labels must be an integer tensor of shape ({n},), got "
                             f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    return y.long()


def check_eps_grid(eps: torch.Tensor | list[float] | tuple[float, ...], *, positive: bool = False) -> torch.Tensor:
    """A non-empty, increasing 1-D grid of budgets >= 0 (> 0 with ``positive``), as float64."""
    grid = torch.as_tensor(eps, dtype=torch.float64).flatten()
    if grid.numel() == 0:
        raise FrameworkError("the eps grid is empty: give at least one budget")
    if not bool(torch.isfinite(grid).all()):
        raise FrameworkError(f"the eps grid has non-finite values: {grid.tolist()}")
    if float(grid.min()) < 0:
        raise FrameworkError(f"eps must be >= 0, got {float(grid.min())}")
    if positive and float(grid.min()) <= 0:
        raise FrameworkError("eps must be > 0 here (the weight 1/eps is not defined at 0): start the grid above 0")
    if grid.numel() > 1 and not bool((grid[1:] > grid[:-1]).all()):
        raise FrameworkError(f"the eps grid must be strictly increasing, got {grid.tolist()}")
    return grid


def distances(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row norm of ``delta`` over every dimension but the first."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)
