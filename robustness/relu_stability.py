"""ReLU stability (thesis ch. 6, Xiao et al. 2019): interval bounds of every ReLU's pre-activation on an
L-inf ball, the RS loss that makes them sign-stable, unstable-ReLU counts, and the pruning that follows
training (pure torch).

Networks: an ``nn.Sequential`` (nested ones are unrolled) of ``Linear``, ``Conv2d`` (zero padding),
``ReLU`` and ``Flatten``, optionally inside :class:`threedb.robustness.models.Normalized` (its
normalisation is an affine first layer). Anything else is refused by name (:class:`StabilityError`).

Bounds are per example, on the box ``[max(x - eps, 0), min(x + eps, 1)]`` (the seed swaps the ends;
the clip to the valid image box is our choice, the one the verifier uses). Affine layers map a box
``(centre c, radius r)`` to ``(W c + b, |W| r)``, which is the thesis' ``u_hat = W+ u + W- l + b``,
``l_hat = W+ l + W- u + b``; a ReLU maps ``[l, u]`` to ``[max(l, 0), max(u, 0)]``.

``mode="naive"`` is that interval arithmetic. ``mode="improved"`` also pushes the provably active
neurons (``l_hat >= 0``) of the ReLU before a ``Linear`` layer back one layer: with ``a`` the active
mask of layer ``A``'s outputs and ``B`` the linear layer after the ReLU,

    B(relu(A x)) = (W_B diag(a) W_A) x + W_B (a * b_A) + W_B ((1 - a) * relu(A x)) + b_B,

whose first term is bounded with the composed matrix (``|W_B diag(a) W_A| r``, no intermediate
interval), the rest by interval arithmetic; the result is intersected with the naive bound of that
layer (both are sound), so improved bounds are never looser than naive ones. For ``A -> ReLU -> B``
on an input box it is exact when every ReLU between them is stable (worked example: ``W1 = [1, -1]^T, b1 = [2, 2], W2 = [1, 1]``, ``x in [0, 1]``:
naive ``[3, 5]``, improved ``[4, 4]``). ``A`` may be a ``Linear`` or a ``Conv2d`` (its transpose gives
the composed rows). **Fallback:** when the layer after the ReLU is a ``Conv2d`` the push-back is not
done (the composed map is per-example and position-dependent, too costly to build in training): that
layer pair uses naive interval arithmetic in both modes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import torch
from torch import nn
from torch.nn import functional as F

Mode = Literal["naive", "improved"]
MODES = ("naive", "improved")
#: The bias of a pruned ("forced off") ReLU's input, whose weights are zeroed: a constant negative pre-activation.
OFF_BIAS = -1.0
Bounds = list[tuple[torch.Tensor, torch.Tensor]]


class StabilityError(ValueError):
    """A network or argument the ReLU-stability tools cannot use; the message names the layer and why."""


@dataclass(frozen=True)
class Op:
    """One step of the chain: ``kind`` is linear, conv, relu, flatten or normalize (``module`` is the
    :class:`Normalized` wrapper for normalize)."""

    kind: str
    module: nn.Module
    position: int


def relu_chain(model: nn.Module) -> list[Op]:
    """The model unrolled into :class:`Op` steps; a :class:`StabilityError` names an unsupported layer."""
    from threedb.robustness.models import Normalized

    leaves: list[tuple[str, nn.Module]] = []
    name = type(model.model if isinstance(model, Normalized) else model).__name__   # for messages

    def visit(module: nn.Module) -> None:
        if isinstance(module, nn.Sequential):
            for child in module:
                visit(child)
        elif isinstance(module, Normalized):
            if module.enabled:
                leaves.append(("normalize", module))
            visit(module.model)
        elif isinstance(module, nn.Linear):
            leaves.append(("linear", module))
        elif isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise StabilityError(f"{name}: Conv2d at position {len(leaves)} uses padding "
                                     f"{module.padding!r} ({module.padding_mode}); only numeric zero padding is supported")
            leaves.append(("conv", module))
        elif isinstance(module, nn.ReLU):
            leaves.append(("relu", module))
        elif isinstance(module, nn.Flatten):
            leaves.append(("flatten", module))
        else:
            raise StabilityError(f"{name}: unsupported layer {type(module).__name__} at position "
                                 f"{len(leaves)} (supported: an nn.Sequential of Linear, Conv2d, ReLU, Flatten, "
                                 "optionally inside Normalized)")

    visit(model)
    if not any(kind == "relu" for kind, _ in leaves):
        raise StabilityError(f"{name}: the network has no ReLU")
    return [Op(kind, module, i) for i, (kind, module) in enumerate(leaves)]


def input_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max(x - eps, 0), min(x + eps, 1))`` for images ``x`` in ``[0, 1]``."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps <= 1:
        raise StabilityError(f"eps must be a number in [0, 1] (pixel units), got {eps!r}")
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------- bounds

def _affine(op: Op, c: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and radius of an affine step's image of the box ``(c, r)``."""
    m = op.module
    if op.kind == "linear":
        return F.linear(c, m.weight, m.bias), F.linear(r, m.weight.abs())
    if op.kind == "conv":
        args = (m.stride, m.padding, m.dilation, m.groups)
        return F.conv2d(c, m.weight, m.bias, *args), F.conv2d(r, m.weight.abs(), None, *args)
    if op.kind == "normalize":
        mean, std = m.mean.to(c), m.std.to(c)
        return (c - mean) / std, r / std
    if op.kind == "flatten":
        return m(c), m(r)
    raise AssertionError(op.kind)


def _forward(op: Op, x: torch.Tensor) -> torch.Tensor:
    if op.kind == "normalize":
        return (x - op.module.mean.to(x)) / op.module.std.to(x)
    return op.module(x)


@dataclass
class _Pending:
    """What the push-back needs of the ReLU just passed: its layer ``A``, ``A``'s input box and the
    ReLU's pre-activation bounds."""

    a_op: Op
    a_c: torch.Tensor
    a_r: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor


def _conv_out_hw(m: nn.Conv2d, h: int, w: int) -> tuple[int, int]:
    kh, kw = m.weight.shape[-2:]
    out = [(s + 2 * p - d * (k - 1) - 1) // st + 1
           for s, p, d, k, st in zip((h, w), m.padding, m.dilation, (kh, kw), m.stride)]
    return out[0], out[1]


def _conv_transpose(m: nn.Conv2d, grid: torch.Tensor, weight: torch.Tensor, in_hw: Sequence[int]) -> torch.Tensor:
    """The transpose of convolution ``m`` (with kernel ``weight``) applied to ``grid`` (its output
    shape), giving tensors of the convolution's input size ``in_hw``."""
    full = [(s - 1) * st - 2 * p + d * (k - 1) + 1
            for s, st, p, d, k in zip(grid.shape[-2:], m.stride, m.padding, m.dilation, weight.shape[-2:])]
    extra = (int(in_hw[0]) - full[0], int(in_hw[1]) - full[1])
    return F.conv_transpose2d(grid, weight, None, m.stride, m.padding, extra, m.groups, m.dilation)


def _transpose_rows(op: Op, rows: torch.Tensor, in_shape: Sequence[int]) -> torch.Tensor:
    """``rows @ W_A`` for rows ``(N, k, m)`` over ``A``'s flat outputs: ``(N, k, prod(in_shape))``."""
    n, k, _ = rows.shape
    w = op.module.weight
    if op.kind == "linear":
        return rows @ w
    c_in, h_in, w_in = in_shape
    grid = rows.reshape(n * k, w.shape[0], *_conv_out_hw(op.module, h_in, w_in))
    return _conv_transpose(op.module, grid, w, (h_in, w_in)).reshape(n, k, c_in * h_in * w_in)


def _pushback(p: _Pending, b_op: Op) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the linear layer ``B`` after the ReLU of ``p`` (see the module docstring)."""
    n = p.lower.shape[0]
    w_b, b_b = b_op.module.weight, b_op.module.bias
    active = (p.lower >= 0).flatten(1).to(p.lower.dtype)          # a step function: no gradient
    rest = 1.0 - active
    z_lo, z_hi = p.lower.clamp(min=0).flatten(1), p.upper.clamp(min=0).flatten(1)
    a_out_c = _forward(p.a_op, p.a_c).flatten(1)                    # W_A c_A + b_A
    centre = F.linear(active * a_out_c + rest * (z_lo + z_hi) / 2, w_b, b_b)
    rows = w_b.unsqueeze(0) * active.unsqueeze(1)                   # W_B diag(a): (N, out, m)
    composed = _transpose_rows(p.a_op, rows, p.a_c.shape[1:])       # W_B diag(a) W_A: (N, out, in_A)
    radius = (composed.abs() @ p.a_r.reshape(n, -1, 1)).squeeze(-1) + F.linear(rest * (z_hi - z_lo) / 2, w_b.abs())
    return centre - radius, centre + radius


def propagate(ops: Sequence[Op], lower: torch.Tensor, upper: torch.Tensor, mode: Mode = "naive") -> Bounds:
    """Pre-activation bounds of every ReLU of ``ops`` for inputs in the box ``[lower, upper]``."""
    if mode not in MODES:
        raise StabilityError(f"mode must be one of {MODES}, got {mode!r}")
    bounds: Bounds = []
    c, r = (lower + upper) / 2, (upper - lower) / 2
    pending: _Pending | None = None
    last_affine: tuple[Op, torch.Tensor, torch.Tensor] | None = None   # the affine step just done, its input box
    last_relu = max(i for i, op in enumerate(ops) if op.kind == "relu")
    for op in ops[:last_relu + 1]:       # the layers after the last ReLU bound no ReLU
        if op.kind == "relu":
            lo, hi = c - r, c + r
            bounds.append((lo, hi))
            pending = None
            if mode == "improved" and last_affine is not None:
                a_op, a_c, a_r = last_affine
                if a_c.dim() == (2 if a_op.kind == "linear" else 4):    # flat vectors / NCHW images
                    pending = _Pending(a_op, a_c, a_r, lo, hi)
            last_affine = None
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
            c, r = (lo + hi) / 2, (hi - lo) / 2
            continue
        if op.kind == "flatten":
            c, r = _affine(op, c, r)
            last_affine = None       # the push-back reads A from the ReLU, not from a reshape
            continue
        nc, nr = _affine(op, c, r)
        if (pending is not None and op.kind == "linear" and c.dim() == 2
                and c.shape[1] == pending.lower[0].numel()):
            lo_p, hi_p = _pushback(pending, op)
            lo, hi = torch.maximum(nc - nr, lo_p), torch.minimum(nc + nr, hi_p)
            nc, nr = (lo + hi) / 2, ((hi - lo) / 2).clamp(min=0)
        pending = None
        last_affine = (op, c, r) if op.kind in ("linear", "conv") else None
        c, r = nc, nr
    return bounds


def preactivation_bounds(model: nn.Module, x: torch.Tensor, eps: float, mode: Mode = "naive") -> Bounds:
    """``[(l_hat, u_hat)]``, one pair per ReLU of ``model`` (each shaped like that pre-activation, with
    the batch dimension), for every example of ``x`` (images in ``[0, 1]``) on its clipped L-inf
    ``eps``-box. Differentiable in the model's parameters (for :func:`rs_loss`)."""
    ops = relu_chain(model)
    lower, upper = input_box(x, eps)
    return propagate(ops, lower, upper, mode)


def rs_loss(bounds: Bounds) -> torch.Tensor:
    """The RS loss: ``sum over ReLUs of -tanh(1 + l_hat * u_hat)``, averaged over examples."""
    total = sum((-torch.tanh(1.0 + lo * hi)).flatten(1).sum(1) for lo, hi in bounds)
    return total.mean()  # type: ignore[union-attr]


def unstable_counts(bounds: Bounds, live: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
    """Unstable ReLUs (``l_hat < 0 < u_hat``): ``per_layer`` (mean per example), ``total`` (mean per
    example), ``neurons`` per layer and the number of ``examples``.

    ``live``: per layer a boolean mask of the neurons that feed the next layer (:func:`live_relus`);
    a ReLU whose outgoing weights are all zero cannot change the output and is not counted.
    """
    per_layer = []
    for k, (lo, hi) in enumerate(bounds):
        unstable = (lo < 0) & (hi > 0)
        if live is not None:
            unstable = unstable & live[k].to(unstable.device)
        per_layer.append(float(unstable.flatten(1).sum(1).double().mean()))
    return {"per_layer": per_layer, "total": float(sum(per_layer)),
            "neurons": [int(lo[0].numel()) for lo, _ in bounds], "examples": int(bounds[0][0].shape[0]) if bounds else 0}


# --------------------------------------------------------------------------------------- structure

@dataclass(frozen=True)
class ReLUSite:
    """One ReLU layer of a chain: the affine step before it (``before``, None if none), the affine
    step after it past reshapes (``after``), and whether flat indices match between them."""

    relu: Op
    before: Op | None
    after: Op | None


def relu_sites(ops: Sequence[Op]) -> list[ReLUSite]:
    """The :class:`ReLUSite` of every ReLU of ``ops``, in order."""
    sites = []
    for i, op in enumerate(ops):
        if op.kind != "relu":
            continue
        before = ops[i - 1] if i > 0 and ops[i - 1].kind in ("linear", "conv") else None
        j = i + 1
        while j < len(ops) and ops[j].kind == "flatten":
            j += 1
        after = ops[j] if j < len(ops) and ops[j].kind in ("linear", "conv") else None
        sites.append(ReLUSite(op, before, after))
    return sites


def _shapes(ops: Sequence[Op], probe: torch.Tensor) -> list[tuple[int, ...]]:
    """The pre-activation shape (without batch) of every ReLU for the input ``probe``."""
    shapes = []
    x = probe
    with torch.no_grad():
        for op in ops:
            if op.kind == "relu":
                shapes.append(tuple(x.shape[1:]))
            x = _forward(op, x)
    return shapes


def live_relus(model: nn.Module, probe: torch.Tensor) -> list[torch.Tensor]:
    """Per ReLU a boolean mask (its pre-activation's shape) of the neurons with a non-zero outgoing
    weight; ``probe`` is any input batch of the right shape (only its shape is used)."""
    ops = relu_chain(model)
    shapes = _shapes(ops, probe[:1])
    masks = []
    with torch.no_grad():
        for site, shape in zip(relu_sites(ops), shapes):
            b = site.after
            if b is None:
                masks.append(torch.ones(shape, dtype=torch.bool))
            elif b.kind == "linear":
                masks.append((b.module.weight.abs().sum(0) > 0).cpu().reshape(shape))
            else:
                w = b.module.weight.abs().double().cpu()
                grid = torch.ones(1, w.shape[0], *_conv_out_hw(b.module, shape[1], shape[2]), dtype=torch.float64)
                masks.append(_conv_transpose(b.module, grid, w, shape[1:])[0] > 0)
    return masks


# ----------------------------------------------------------------------------------------- pruning

def l1_norm(model: nn.Module) -> torch.Tensor:
    """``sum |w|`` over the trainable weight matrices and kernels (``ndim > 1``; biases excluded)."""
    weights = [p.abs().sum() for p in model.parameters() if p.requires_grad and p.ndim > 1]
    if not weights:
        return torch.zeros(())
    return torch.stack(weights).sum()


def prune_weights(model: nn.Module, threshold: float) -> dict[str, int]:
    """Set every trainable weight (``Linear``/``Conv2d`` kernels) with ``|w| < threshold`` to 0;
    returns ``{"zeroed": k, "weights": total, "already_zero": z}``."""
    zeroed = total = already = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight.requires_grad:
                w = module.weight
                small = w.abs() < threshold
                zero = int((w == 0).sum())
                already += zero
                zeroed += int(small.sum()) - zero
                total += w.numel()
                w[small] = 0.0
    return {"zeroed": zeroed, "weights": total, "already_zero": already}


def relu_activity(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Per ReLU the fraction of the inputs (batches of images) on which each neuron is active
    (pre-activation ``> 0``), shaped like the pre-activation without the batch dimension."""
    ops = relu_chain(model)
    counts: list[torch.Tensor] | None = None
    seen = 0
    with torch.no_grad():
        for x in batches:
            k = 0
            found = []
            for op in ops:
                if op.kind == "relu":
                    found.append((x > 0).sum(0).double().cpu())
                    k += 1
                x = _forward(op, x)
            counts = found if counts is None else [a + b for a, b in zip(counts, found)]
            seen += int(x.shape[0])
    if counts is None or seen == 0:
        raise StabilityError("relu_activity needs at least one input")
    return [c / seen for c in counts]


def prune_relus(model: nn.Module, activity: Sequence[torch.Tensor], min_active: float) -> list[dict[str, int]]:
    """Remove the ReLUs active on fewer than ``min_active`` of the inputs ``activity`` was measured on
    (:func:`relu_activity`), in place, without changing the chain's layers:

    * after a ``Linear`` layer: its row is zeroed and its bias set to :data:`OFF_BIAS` (the pre-activation
      is the constant -1: off and stable, also for a verifier that widens its bounds by rounding, which
      an exact 0 would leave straddling zero);
    * else, before a ``Linear`` layer: its outgoing column is zeroed (it feeds nothing; it drops out
      of :func:`unstable_counts` with :func:`live_relus`);
    * else, after a ``Conv2d``: only whole channels whose every position is rarely active are forced off
      so (a convolution shares its kernel over positions); single positions are left (``kept``).

    The other half of the thesis' ReLU pruning (a ReLU *inactive* on < 10% replaced by the identity)
    would change the chain's layers and is not done. Returns per ReLU layer ``{neurons, rarely_active,
    forced_off, outgoing_zeroed, kept}``.
    """
    ops = relu_chain(model)
    sites = relu_sites(ops)
    if len(activity) != len(sites):
        raise StabilityError(f"activity has {len(activity)} layers, the network {len(sites)} ReLU layers")
    report = []
    with torch.no_grad():
        for site, act in zip(sites, activity):
            rare = act < min_active
            entry = {"neurons": int(act.numel()), "rarely_active": int(rare.sum()), "forced_off": 0,
                     "outgoing_zeroed": 0, "kept": 0}
            a, b = site.before, site.after
            flat = rare.flatten()
            if a is not None and a.kind == "linear":
                a.module.weight[flat.to(a.module.weight.device)] = 0.0
                if a.module.bias is not None:
                    a.module.bias[flat.to(a.module.bias.device)] = OFF_BIAS
                entry["forced_off"] = int(flat.sum())
            elif b is not None and b.kind == "linear" and b.module.weight.shape[1] == flat.numel():
                b.module.weight[:, flat.to(b.module.weight.device)] = 0.0
                entry["outgoing_zeroed"] = int(flat.sum())
            elif a is not None and a.kind == "conv" and rare.dim() == 3:
                channels = rare.flatten(1).all(1)
                a.module.weight[channels.to(a.module.weight.device)] = 0.0
                if a.module.bias is not None:
                    a.module.bias[channels.to(a.module.bias.device)] = OFF_BIAS
                entry["forced_off"] = int(rare[channels].sum())
                entry["kept"] = int(rare[~channels].sum())
            else:
                entry["kept"] = int(flat.sum())
            report.append(entry)
    return report


__all__ = ["MODES", "OFF_BIAS", "Bounds", "Mode", "Op", "ReLUSite", "StabilityError", "input_box", "l1_norm", "live_relus",
           "preactivation_bounds", "propagate", "prune_relus", "prune_weights", "relu_activity", "relu_chain",
           "relu_sites", "rs_loss", "unstable_counts"]
