"""A network as the verifier sees it: a chain of affine maps, ReLUs and max-pools on flat vectors.

Every supported layer is reduced to one of three kinds, acting on the example flattened in C order
(``C x H x W`` for images, as PyTorch and ONNX lay them out):

* :class:`Affine` ``y = W x + b`` (dense ``float64``): linear/Gemm/MatMul, convolutions, average
  pooling, batch normalisation, normalisation by constants and reshapes all become one of these, and
  consecutive ones are composed into one, so the bounds and the MILP see as few layers as possible;
* :class:`ReLU` ``y = max(x, 0)`` element-wise;
* :class:`MaxPool` ``y_i = max_{j in groups[i]} x_j``.

Affine maps are built *exactly* by probing (a layer's ``W`` is its response to the unit vectors
minus its response to zero, in ``float64``), so there is one conversion for every affine module and
no per-layer index arithmetic to get wrong. Dense matrices suit the MNIST/CIFAR-sized networks of
the verification benchmarks (a WK17a convolution is a ``3136 x 784`` matrix).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import nn


class NetworkError(ValueError):
    """A network cannot be represented or used as asked; the message names the layer (or node) and why."""


@dataclass(frozen=True, eq=False)
class Affine:
    """``y = weight @ x + bias`` (``weight``: ``out x in``)."""

    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", np.ascontiguousarray(self.weight, dtype=np.float64))
        object.__setattr__(self, "bias", np.ascontiguousarray(self.bias, dtype=np.float64).reshape(-1))
        if self.weight.ndim != 2 or self.weight.shape[0] != self.bias.shape[0]:
            raise NetworkError(f"affine layer: weight {self.weight.shape} does not match bias {self.bias.shape}")

    @property
    def in_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_size(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    def then(self, other: "Affine") -> "Affine":
        """``other(self(x))`` as one affine map."""
        return Affine(other.weight @ self.weight, other.weight @ self.bias + other.bias)


@dataclass(frozen=True, eq=False)
class ReLU:
    """``y = max(x, 0)`` on ``size`` units."""

    size: int

    @property
    def in_size(self) -> int:
        return self.size

    @property
    def out_size(self) -> int:
        return self.size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)


@dataclass(frozen=True, eq=False)
class MaxPool:
    """``y_i = max_j x[groups[i, j]]`` (``groups``: ``out x k`` indices into the ``in_size`` inputs; a
    window cut by padding repeats one of its indices, which leaves the max unchanged)."""

    groups: np.ndarray
    in_size: int

    def __post_init__(self) -> None:
        groups = np.asarray(self.groups, dtype=np.int64)
        if groups.ndim != 2 or groups.size == 0 or groups.min() < 0 or groups.max() >= self.in_size:
            raise NetworkError(f"max-pool layer: bad index groups {groups.shape} for {self.in_size} inputs")
        object.__setattr__(self, "groups", groups)

    @property
    def out_size(self) -> int:
        return int(self.groups.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x[..., self.groups].max(-1)


Layer = Union[Affine, ReLU, MaxPool]


@dataclass(eq=False)
class Network:
    """A verifiable network: ``layers`` applied in order to a flat input of ``prod(input_shape)`` values.

    ``source`` says where it came from (a file name, a module's class) for messages and reports.
    """

    input_shape: tuple[int, ...]
    layers: list[Layer]
    source: str = "network"
    output_shape: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        size = self.in_size
        for i, layer in enumerate(self.layers):
            if layer.in_size != size:
                raise NetworkError(f"{self.source}: layer {i} ({type(layer).__name__}) takes {layer.in_size} "
                                   f"inputs but the layer before gives {size}")
            size = layer.out_size
        if not self.output_shape:
            self.output_shape = (size,)
        elif int(np.prod(self.output_shape)) != size:
            raise NetworkError(f"{self.source}: output shape {self.output_shape} does not hold {size} values")

    @property
    def in_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def out_size(self) -> int:
        return self.layers[-1].out_size if self.layers else self.in_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs of flat inputs ``(..., in_size)`` in ``float64``."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.in_size:
            x = x.reshape(*x.shape[:-len(self.input_shape)], self.in_size) if x.ndim >= len(self.input_shape) \
                else x
        if x.shape[-1] != self.in_size:
            raise NetworkError(f"{self.source}: expected inputs of {self.in_size} values, got shape {x.shape}")
        for layer in self.layers:
            x = layer(x)
        return x

    def relu_layers(self) -> list[int]:
        """Indices of the :class:`ReLU` layers."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, ReLU)]

    def to_torch(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The same function as a PyTorch module on ``N x *input_shape`` (or flat ``N x in_size``) inputs."""
        return TorchNetwork(self, dtype)

    def describe(self) -> dict:
        kinds = [f"{type(layer).__name__}({layer.out_size})" for layer in self.layers]
        return {"source": self.source, "input_shape": list(self.input_shape), "layers": kinds,
                "relus": sum(layer.out_size for layer in self.layers if isinstance(layer, ReLU))}


class TorchNetwork(nn.Module):
    """:class:`Network` as a differentiable module (for attacks and checks against the original)."""

    def __init__(self, network: Network, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.network = network
        self.in_size = network.in_size
        self.kinds: list[str] = []
        for i, layer in enumerate(network.layers):
            if isinstance(layer, Affine):
                self.register_buffer(f"w{i}", torch.tensor(layer.weight, dtype=dtype))
                self.register_buffer(f"b{i}", torch.tensor(layer.bias, dtype=dtype))
                self.kinds.append("affine")
            elif isinstance(layer, MaxPool):
                self.register_buffer(f"g{i}", torch.tensor(layer.groups))
                self.kinds.append("maxpool")
            else:
                self.kinds.append("relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.in_size)
        for i, kind in enumerate(self.kinds):
            if kind == "affine":
                x = nn.functional.linear(x.to(getattr(self, f"w{i}").dtype), getattr(self, f"w{i}"),
                                         getattr(self, f"b{i}"))
            elif kind == "relu":
                x = torch.relu(x)
            else:
                x = x[:, getattr(self, f"g{i}")].amax(-1)
        return x


# --------------------------------------------------------------------------- building networks

def probe_affine(function: Callable[[torch.Tensor], torch.Tensor], in_shape: Sequence[int]) -> Affine:
    """The exact affine map of an affine ``function`` of ``N x *in_shape`` tensors (``float64``)."""
    n = int(np.prod(in_shape))
    with torch.no_grad():
        bias = function(torch.zeros(1, *in_shape, dtype=torch.float64)).reshape(-1)
    m = int(bias.numel())
    weight = np.empty((m, n))
    # unit vectors in chunks: a wide layer (a 32 x 27 x 27 activation) would need an n x n identity
    chunk = max(1, min(max(n, m), (1 << 23) // max(n, m, 1)))
    if m < n:
        # fewer outputs than inputs: the rows of W are the gradients of the outputs (m backward passes
        # instead of n forward ones; exact as well, the function being affine)
        zero = torch.zeros(1, *in_shape, dtype=torch.float64)
        _, pullback = torch.func.vjp(lambda x: function(x).reshape(-1), zero)
        for start in range(0, m, chunk):
            stop = min(m, start + chunk)
            cotangents = torch.zeros(stop - start, m, dtype=torch.float64)
            cotangents[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            rows = torch.func.vmap(pullback)(cotangents)[0]
            weight[start:stop] = rows.detach().reshape(stop - start, n).numpy()
        return Affine(weight, bias.numpy())
    with torch.no_grad():
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            basis = torch.zeros(stop - start, n, dtype=torch.float64)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            out = function(basis.reshape(stop - start, *in_shape)).reshape(stop - start, m)
            weight[:, start:stop] = (out - bias).T.numpy()
    return Affine(weight, bias.numpy())


def compose(layers: Sequence[Layer]) -> list[Layer]:
    """Consecutive :class:`Affine` layers composed into one (identity-free, fewer MILP variables)."""
    out: list[Layer] = []
    for layer in layers:
        if isinstance(layer, Affine) and out and isinstance(out[-1], Affine):
            out[-1] = out[-1].then(layer)
        else:
            out.append(layer)
    return out


def maxpool_groups(shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                   padding: Sequence[int], ceil_mode: bool = False) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Index groups of a 2-D max-pool on a ``C x H x W`` input and the output shape (padding never wins)."""
    c, h, w = (int(d) for d in shape)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    rounding = np.ceil if ceil_mode else np.floor
    oh = int(rounding((h + 2 * ph - kh) / sh)) + 1
    ow = int(rounding((w + 2 * pw - kw) / sw)) + 1
    if ceil_mode:   # as PyTorch: a last window that would start in the right/bottom padding is dropped
        oh -= int((oh - 1) * sh >= h + ph)
        ow -= int((ow - 1) * sw >= w + pw)
    index = np.arange(c * h * w).reshape(c, h, w)
    groups = []
    for ch in range(c):
        for i in range(oh):
            for j in range(ow):
                rows = [r for r in range(i * sh - ph, i * sh - ph + kh) if 0 <= r < h]
                cols = [q for q in range(j * sw - pw, j * sw - pw + kw) if 0 <= q < w]
                if not rows or not cols:
                    raise NetworkError(f"max-pool window ({ch}, {i}, {j}) lies entirely in the padding")
                cell = index[ch][np.ix_(rows, cols)].reshape(-1)
                groups.append(np.resize(cell, kh * kw))   # repeat indices of a cut window: same max
    return np.asarray(groups), (c, oh, ow)


#: PyTorch modules that are affine functions of their input (converted by probing).
AFFINE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten,
                  nn.Identity, nn.Dropout, nn.Unflatten)


#: modules that only reshape (or pass through) the example: no layer of their own
RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)


def _modules_in_order(module: nn.Module) -> list[nn.Module]:
    from threedb.robustness.models import Normalized

    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _modules_in_order(child)]
    if isinstance(module, Normalized):
        if not module.enabled:
            return _modules_in_order(module.model)
        return [_Normalize(module.mean, module.std)] + _modules_in_order(module.model)
    if isinstance(module, TorchNetwork):
        return [_Wrapped(module)]
    return [module]


class _Normalize(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)


class _Wrapped(nn.Module):
    def __init__(self, network: TorchNetwork) -> None:
        super().__init__()
        self.network = network.network


def from_torch(module: nn.Module, input_shape: Sequence[int], *, source: str | None = None) -> Network:
    """A :class:`Network` computing what ``module`` computes on ``1 x *input_shape`` inputs.

    ``module`` is an ``nn.Sequential`` (nested ones and :class:`threedb.robustness.models.Normalized`
    are unrolled) of linear and convolution layers, average pooling, batch normalisation (eval-mode
    statistics), flatten/dropout/identity, ``ReLU`` and ``MaxPool2d``. Anything else is refused by name.
    """
    source = source or type(module).__name__
    shape = tuple(int(d) for d in input_shape)
    layers: list[Layer] = []
    pending: list[nn.Module] = []   # affine modules not yet probed
    pending_shape = shape

    def flush() -> None:
        nonlocal pending, pending_shape
        if pending:
            chain = nn.Sequential(*pending).double().eval()
            layers.append(probe_affine(chain, pending_shape))
            pending, pending_shape = [], shape

    with torch.no_grad():
        for index, leaf in enumerate(_modules_in_order(module)):
            if isinstance(leaf, _Wrapped):
                flush()
                layers.extend(leaf.network.layers)
                shape = (leaf.network.out_size,)
                pending_shape = shape
            elif isinstance(leaf, RESHAPES) and not pending:
                # the flat C-order vector is unchanged: only its shape is
                probe = torch.zeros(1, *shape, dtype=torch.float64)
                shape = tuple(leaf.eval()(probe).shape[1:])
            elif isinstance(leaf, AFFINE_MODULES + (_Normalize,)):
                if not pending:
                    pending_shape = shape
                pending.append(_copy_double(leaf))
                probe = torch.zeros(1, *pending_shape, dtype=torch.float64)
                shape = tuple(nn.Sequential(*pending).double().eval()(probe).shape[1:])
            elif isinstance(leaf, nn.ReLU):
                flush()
                layers.append(ReLU(int(np.prod(shape))))
            elif isinstance(leaf, nn.MaxPool2d):
                flush()
                if len(shape) != 3 or leaf.dilation not in (1, (1, 1)):
                    raise NetworkError(f"{source}: MaxPool2d at position {index} needs a C x H x W input "
                                       f"and no dilation (got shape {shape})")
                pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
                in_size = int(np.prod(shape))
                groups, shape = maxpool_groups(shape, pair(leaf.kernel_size), pair(leaf.stride or leaf.kernel_size),
                                               pair(leaf.padding), leaf.ceil_mode)
                layers.append(MaxPool(groups, in_size))
            else:
                raise NetworkError(f"{source}: unsupported layer {type(leaf).__name__} at position {index} "
                                   "(supported: Linear, Conv2d, AvgPool2d, BatchNorm, Flatten, ReLU, MaxPool2d, "
                                   "normalisation)")
        flush()
    return Network(tuple(int(d) for d in input_shape), compose(layers), source=source)


def _copy_double(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).double().eval()


__all__ = ["AFFINE_MODULES", "Affine", "Layer", "MaxPool", "Network", "NetworkError", "ReLU", "TorchNetwork",
           "compose", "from_torch", "maxpool_groups", "probe_affine"]
