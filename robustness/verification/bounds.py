"""Sound bounds on every unit of a :class:`~.network.Network` over an input box.

``bounds[k] = (lower, upper)`` bounds the values *entering* layer ``k`` (``bounds[0]`` is the input
box, ``bounds[-1]`` the outputs). Two methods, the second never looser than the first because each
result is intersected with the interval one:

* :func:`interval_bounds`: interval arithmetic, ``W x + b`` in
  ``[W+ l + W- u + b, W+ u + W- l + b]`` (cheap, loose);
* :func:`symbolic_bounds`: linear bounds propagated backwards from each unit to the input
  (CROWN / DeepPoly), relaxing every unstable ReLU by its triangle's upper line ``u (z - l) / (u - l)``
  and the lower line ``a z`` with ``a`` in ``{0, 1}`` (the one of smaller area), and each max-pool by
  its dominating input or a constant. Much tighter than intervals through several layers.

Bounds are widened outwards by a few ulps of ``float64`` (:func:`widen`) so rounding in the products
can never make them claim more than holds. :func:`output_bounds` bounds ``C y`` for an output
specification row-wise, the verifier's cheapest test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from threedb.robustness.verification.network import Affine, MaxPool, Network, ReLU

Bounds = list[tuple[np.ndarray, np.ndarray]]

#: outward rounding: relative and absolute margins applied to every computed bound
REL_MARGIN, ABS_MARGIN = 1e-12, 1e-10


def widen(lower: np.ndarray, upper: np.ndarray, scale: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` pushed outwards by the rounding a float64 sum of terms of size ``scale`` can make."""
    size = np.maximum(np.abs(lower), np.abs(upper)) if scale is None else scale
    margin = ABS_MARGIN + REL_MARGIN * size * 64
    return lower - margin, upper + margin


def affine_interval(layer: Affine, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval image of a box under ``W x + b``."""
    positive, negative = np.maximum(layer.weight, 0.0), np.minimum(layer.weight, 0.0)
    lo = positive @ lower + negative @ upper + layer.bias
    hi = positive @ upper + negative @ lower + layer.bias
    scale = np.abs(layer.weight) @ np.maximum(np.abs(lower), np.abs(upper)) + np.abs(layer.bias)
    return widen(lo, hi, scale)


def layer_interval(layer, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval image of a box under one layer (ReLU and max are monotone: exact on the box's corners)."""
    if isinstance(layer, Affine):
        return affine_interval(layer, lower, upper)
    if isinstance(layer, ReLU):
        return np.maximum(lower, 0.0), np.maximum(upper, 0.0)
    return lower[layer.groups].max(1), upper[layer.groups].max(1)


def interval_bounds(network: Network, lower: np.ndarray, upper: np.ndarray) -> Bounds:
    """Interval bounds of every layer's input and of the outputs."""
    lower = np.asarray(lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(upper, dtype=np.float64).reshape(-1)
    out: Bounds = [(lower, upper)]
    for layer in network.layers:
        out.append(layer_interval(layer, *out[-1]))
    return out


# --------------------------------------------------------------------------- symbolic (backward) bounds

@dataclass
class ReluRelaxation:
    """Per unit: ``lower_slope * z <= relu(z) <= upper_slope * z + upper_offset`` on ``[l, u]``."""

    lower_slope: np.ndarray
    upper_slope: np.ndarray
    upper_offset: np.ndarray

    @classmethod
    def of(cls, lower: np.ndarray, upper: np.ndarray) -> "ReluRelaxation":
        active, inactive = lower >= 0, upper <= 0
        unstable = ~(active | inactive)
        width = np.where(unstable, upper - lower, 1.0)
        upper_slope = np.where(active, 1.0, np.where(unstable, upper / width, 0.0))
        upper_offset = np.where(unstable, -lower * upper / width, 0.0)
        # lower line: slope 1 when u >= -l (smaller area than 0), as in CROWN's adaptive choice
        lower_slope = np.where(active, 1.0, np.where(unstable & (upper >= -lower), 1.0, 0.0))
        return cls(lower_slope, upper_slope, upper_offset)


@dataclass
class MaxRelaxation:
    """Per pool output: ``x[lower_index] <= y``; ``y <= x[upper_index]`` when that input dominates the
    window (``upper_index >= 0``), otherwise ``y <= upper_constant``."""

    lower_index: np.ndarray
    upper_index: np.ndarray
    upper_constant: np.ndarray

    @classmethod
    def of(cls, layer: MaxPool, lower: np.ndarray, upper: np.ndarray) -> "MaxRelaxation":
        lo, hi = lower[layer.groups], upper[layer.groups]
        best = lo.argmax(1)
        rows = np.arange(layer.groups.shape[0])
        best_lower = lo[rows, best]
        same = (layer.groups == layer.groups[rows, best][:, None])   # a cut window repeats an index
        others_upper = np.where(same, -np.inf, hi).max(1)
        dominated = best_lower >= others_upper
        lower_index = layer.groups[rows, best]
        return cls(lower_index, np.where(dominated, lower_index, -1), hi.max(1))


def _back_through(layer, relax, coef: np.ndarray, const: np.ndarray, upper_side: bool) -> tuple[np.ndarray, np.ndarray]:
    """One step of the backward pass: ``coef @ layer(v) + const`` bounded by ``coef' @ v + const'`` (from
    above when ``upper_side``, from below otherwise)."""
    if isinstance(layer, Affine):
        return coef @ layer.weight, const + coef @ layer.bias
    positive, negative = np.maximum(coef, 0.0), np.minimum(coef, 0.0)
    # the side of each coefficient: the upper relaxation where it pushes the bound the way we want
    up_part, low_part = (positive, negative) if upper_side else (negative, positive)
    if isinstance(layer, ReLU):
        new = up_part * relax.upper_slope + low_part * relax.lower_slope
        return new, const + up_part @ relax.upper_offset
    n_in = layer.in_size
    new = np.zeros((coef.shape[0], n_in))
    np.add.at(new.T, relax.lower_index, low_part.T)
    has_var = relax.upper_index >= 0
    np.add.at(new.T, relax.upper_index[has_var], up_part[:, has_var].T)
    const = const + up_part[:, ~has_var] @ relax.upper_constant[~has_var]
    return new, const


def backward_bound(network: Network, upto: int, coef: np.ndarray, relaxations: Sequence,
                   lower: np.ndarray, upper: np.ndarray, upper_side: bool,
                   offset: Optional[np.ndarray] = None) -> np.ndarray:
    """Bound of ``coef @ v_upto + offset`` over the input box (``v_upto``: the values entering layer ``upto``),
    from above (``upper_side``) or below, using ``relaxations[k]`` for the ReLU / max-pool layers ``k < upto``."""
    const = np.zeros(coef.shape[0]) if offset is None else np.asarray(offset, dtype=np.float64).copy()
    scale = np.zeros(coef.shape[0])
    for k in range(upto - 1, -1, -1):
        coef, const = _back_through(network.layers[k], relaxations[k], coef, const, upper_side)
        scale = np.maximum(scale, np.abs(const))
    positive, negative = np.maximum(coef, 0.0), np.minimum(coef, 0.0)
    if upper_side:
        value = positive @ upper + negative @ lower + const
    else:
        value = positive @ lower + negative @ upper + const
    scale = np.maximum(scale, np.abs(coef) @ np.maximum(np.abs(lower), np.abs(upper)) + np.abs(const))
    lo, hi = widen(value, value, scale * 4)
    return hi if upper_side else lo


def symbolic_bounds(network: Network, lower: np.ndarray, upper: np.ndarray, *,
                    known: Optional[Bounds] = None, only_unstable: bool = True, start: int = 0) -> Bounds:
    """Bounds of every layer's input by backward linear propagation, intersected with ``known`` (default:
    interval bounds). ``only_unstable``: recompute only the ReLU inputs the known bounds leave unstable and
    the max-pool inputs (the rest cannot gain anything that matters to the encodings). ``start``: layers
    before it keep their known input bounds (already tightened further by the caller)."""
    known = interval_bounds(network, lower, upper) if known is None else [(lo.copy(), hi.copy()) for lo, hi in known]
    lower, upper = known[0]
    relaxations: list = [None] * len(network.layers)
    for k, layer in enumerate(network.layers):
        if k >= start and k > 0 and isinstance(network.layers[k - 1], Affine):
            lo, hi = known[k]
            rows = np.arange(lo.size)
            if only_unstable and isinstance(layer, ReLU):
                rows = np.flatnonzero((lo < 0) & (hi > 0))
            if rows.size:
                # the affine layer k-1 is folded into the start of the pass
                affine = network.layers[k - 1]
                coef, offset = affine.weight[rows], affine.bias[rows]
                new_hi = backward_bound(network, k - 1, coef, relaxations, lower, upper, True, offset)
                new_lo = backward_bound(network, k - 1, coef, relaxations, lower, upper, False, offset)
                lo[rows], hi[rows] = np.maximum(lo[rows], new_lo), np.minimum(hi[rows], new_hi)
        if isinstance(layer, ReLU):
            relaxations[k] = ReluRelaxation.of(*known[k])
        elif isinstance(layer, MaxPool):
            relaxations[k] = MaxRelaxation.of(layer, *known[k])
        # the next layer's input, from this layer's (possibly tightened) input
        if k + 1 >= start:
            nxt = layer_interval(layer, *known[k])
            known[k + 1] = (np.maximum(known[k + 1][0], nxt[0]), np.minimum(known[k + 1][1], nxt[1]))
    last = len(network.layers)
    if last and isinstance(network.layers[-1], Affine):
        affine = network.layers[-1]
        new_hi = backward_bound(network, last - 1, affine.weight, relaxations, lower, upper, True, affine.bias)
        new_lo = backward_bound(network, last - 1, affine.weight, relaxations, lower, upper, False, affine.bias)
        lo, hi = known[last]
        known[last] = (np.maximum(lo, new_lo), np.minimum(hi, new_hi))
    return known


def relaxations_of(network: Network, bounds: Bounds) -> list:
    """The ReLU / max-pool relaxations that ``bounds`` give (``None`` for affine layers)."""
    out: list = []
    for k, layer in enumerate(network.layers):
        if isinstance(layer, ReLU):
            out.append(ReluRelaxation.of(*bounds[k]))
        elif isinstance(layer, MaxPool):
            out.append(MaxRelaxation.of(layer, *bounds[k]))
        else:
            out.append(None)
    return out


def output_lower_bounds(network: Network, bounds: Bounds, c: np.ndarray, symbolic: bool = True) -> np.ndarray:
    """Lower bounds of ``c @ y`` (rows of ``c``) over the box, from the outputs' intervals and, with
    ``symbolic``, a backward pass from the specification itself (tighter than composing intervals)."""
    c = np.atleast_2d(np.asarray(c, dtype=np.float64))
    lo, hi = bounds[-1]
    best = np.maximum(c, 0.0) @ lo + np.minimum(c, 0.0) @ hi
    if symbolic and network.layers:
        relaxations = relaxations_of(network, bounds)
        last = len(network.layers)
        if isinstance(network.layers[-1], Affine):
            affine = network.layers[-1]
            value = backward_bound(network, last - 1, c @ affine.weight, relaxations, *bounds[0], False,
                                   c @ affine.bias)
        else:
            value = backward_bound(network, last, c, relaxations, *bounds[0], False)
        best = np.maximum(best, value)
    return widen(best, best)[0]


def unstable_counts(network: Network, bounds: Bounds) -> list[int]:
    """Per ReLU layer, the units whose input bounds straddle zero (the MILP's binaries)."""
    return [int(np.sum((bounds[k][0] < 0) & (bounds[k][1] > 0))) for k in network.relu_layers()]


__all__ = ["Bounds", "MaxRelaxation", "ReluRelaxation", "affine_interval", "backward_bound", "interval_bounds",
           "layer_interval", "output_lower_bounds", "relaxations_of", "symbolic_bounds", "unstable_counts", "widen"]
