"""Read a feed-forward ONNX network (VNN-COMP style) into a :class:`~.network.Network`.

The graph must be a *chain* on one activation tensor: one dynamic graph input (initializers, even
when also listed as graph inputs, are constants), each node taking the current activation at most
once, and the graph's single output being the last activation. Nodes whose inputs are all constant
(``Constant``, ``Shape`` of an activation, ``Gather``/``Concat``/``Cast``/``Slice``/arithmetic on
constants, as exporters write for a dynamic ``Reshape``) are evaluated at load time.

Affine ops on the activation are written as functions of one ``float64`` example with its full
ONNX shape (batch dimension included) and run under :func:`torch.func.vmap`; each run of
consecutive affine ops becomes one :class:`~.network.Affine` through
:func:`~.network.probe_affine`, which is exact. ``Relu`` and ``MaxPool`` end a run. A run of pure
layout ops (Flatten, Reshape, Squeeze, Identity, ...) is the identity on the flat C-order vector and
adds no layer.

Supported on the activation: Gemm (any ``transA``/``transB``, ``alpha``, ``beta``), MatMul,
Add/Sub/Mul with a constant, Div by a constant, Neg, Conv (1-D/2-D, strides, pads, ``auto_pad``,
dilations, groups), AveragePool (2-D, ``count_include_pad`` and ``ceil_mode`` as ONNX defines them),
BatchNormalization (inference statistics), Pad (constant mode), Flatten, Reshape, Transpose,
Squeeze, Unsqueeze, Identity, Dropout (inference: identity), Cast to a float type, Relu, MaxPool
(2-D). Anything else -- an op, a branch, a second dynamic input -- is refused with a
:class:`~.network.NetworkError` naming the file, the node and its op type.

The batch dimension: a graph input of rank >= 2 whose first dimension is 1 or symbolic is batched
(``input_shape`` drops it and the batch is fixed to 1); a rank-1 input (``[1]``, ``[5]``) is one
unbatched example. Either way the flat vector is the C-order flattening of the example.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from threedb.robustness.verification.network import Layer, MaxPool, Network, NetworkError, ReLU, compose, probe_affine

#: files larger than this are refused before parsing (protobuf itself stops at 2 GiB)
MAX_BYTES = 1 << 30

Tensor = torch.Tensor
Inputs = list[Optional[Tensor]]


# --------------------------------------------------------------------------- loading and validation

def _load_model(path: Path, max_bytes: int):
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise NetworkError(f"{path}: no such ONNX file")
    size = path.stat().st_size
    if size == 0:
        raise NetworkError(f"{path}: the file is empty, not an ONNX model")
    if size > max_bytes:
        raise NetworkError(f"{path}: {size} bytes is more than the {max_bytes} allowed for an ONNX network")
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise NetworkError(f"{path}: not a readable ONNX model (corrupt or truncated?): {exc}") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise NetworkError(f"{path}: not an ONNX model (no graph; corrupt or truncated?)")
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise NetworkError(f"{path}: initializer {tensor.name!r} is stored in an external data file "
                               "(not supported; save the model with its weights inside)")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NetworkError(f"{path}: not a valid ONNX model (corrupt or truncated?): {first}") from None
    return model


def _to_torch(array: np.ndarray) -> Tensor:
    """A constant as ``float64`` (floats), ``int64`` (integers) or ``bool``: exact arithmetic at load time."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return torch.from_numpy(array.copy())
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.int64))
    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(array.astype(np.float64))
    raise ValueError(f"constants of type {array.dtype} are not supported")


def _attributes(node) -> dict:
    import onnx
    from onnx import numpy_helper

    out = {}
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            out[attribute.name] = numpy_helper.to_array(attribute.t)
        elif attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS,
                                onnx.AttributeProto.SPARSE_TENSOR):
            out[attribute.name] = None          # ops with these are refused anyway
        else:
            value = onnx.helper.get_attribute_value(attribute)
            out[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return out


# --------------------------------------------------------------------------- op implementations
# Each takes the node's attributes and its inputs (torch tensors, None where omitted) and returns
# its first output. On the activation they run on one example under vmap, so they use only shapes
# of their own (per-example) arguments and plain tensor ops; parameters come from constants.

def _ints(t: Optional[Tensor]) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _floats(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.is_floating_point() or b.is_floating_point():
        return a.double(), b.double()
    return a, b


def _add(attrs: dict, xs: Inputs) -> Tensor:
    a, b = _floats(xs[0], xs[1])
    return a + b


def _sub(attrs: dict, xs: Inputs) -> Tensor:
    a, b = _floats(xs[0], xs[1])
    return a - b


def _mul(attrs: dict, xs: Inputs) -> Tensor:
    a, b = _floats(xs[0], xs[1])
    return a * b


def _div(attrs: dict, xs: Inputs) -> Tensor:
    a, b = _floats(xs[0], xs[1])
    return a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")


def _neg(attrs: dict, xs: Inputs) -> Tensor:
    return -xs[0]


def _matmul(attrs: dict, xs: Inputs) -> Tensor:
    a, b = _floats(xs[0], xs[1])
    return torch.matmul(a, b)


def _gemm(attrs: dict, xs: Inputs) -> Tensor:
    a, b = _floats(xs[0], xs[1])
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"Gemm needs 2-D operands, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.transpose(0, 1) if attrs.get("transA", 0) else a
    b = b.transpose(0, 1) if attrs.get("transB", 0) else b
    y = float(attrs.get("alpha", 1.0)) * (a @ b)
    if len(xs) > 2 and xs[2] is not None:
        y = y + float(attrs.get("beta", 1.0)) * xs[2].double()
    return y


def _identity(attrs: dict, xs: Inputs) -> Tensor:
    return xs[0]


def _dropout(attrs: dict, xs: Inputs) -> Tensor:
    if len(xs) > 2 and xs[2] is not None and bool(xs[2].reshape(-1)[0]):
        raise _Unsupported("Dropout in training mode (random)")
    return xs[0]


def _cast(attrs: dict, xs: Inputs) -> Tensor:
    import onnx

    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
    x = xs[0]
    if np.issubdtype(dtype, np.floating):
        return x.double()
    if dtype == np.bool_:
        return x != 0
    if np.issubdtype(dtype, np.integer):
        return x.trunc().long() if x.is_floating_point() else x.long()
    raise ValueError(f"Cast to {dtype} is not supported")


def _flatten(attrs: dict, xs: Inputs) -> Tensor:
    x = xs[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _reshape(attrs: dict, xs: Inputs) -> Tensor:
    x = xs[0]
    shape = _ints(xs[1]) if len(xs) > 1 and xs[1] is not None else list(attrs.get("shape", []))
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _axes(attrs: dict, xs: Inputs) -> Optional[list[int]]:
    if len(xs) > 1 and xs[1] is not None:
        return _ints(xs[1])
    return list(attrs["axes"]) if "axes" in attrs else None


def _squeeze(attrs: dict, xs: Inputs) -> Tensor:
    x = xs[0]
    axes = _axes(attrs, xs)
    rank = x.dim()
    drop = {a % rank for a in axes} if axes is not None else {i for i, d in enumerate(x.shape) if d == 1}
    if any(x.shape[a] != 1 for a in drop):
        raise ValueError(f"Squeeze of axes {sorted(drop)} of a tensor of shape {tuple(x.shape)}")
    return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


def _unsqueeze(attrs: dict, xs: Inputs) -> Tensor:
    x = xs[0]
    axes = _axes(attrs, xs) or []
    rank = x.dim() + len(axes)
    shape, rest = [], iter(x.shape)
    insert = {a % rank for a in axes}
    for i in range(rank):
        shape.append(1 if i in insert else next(rest))
    return x.reshape(shape)


def _transpose(attrs: dict, xs: Inputs) -> Tensor:
    x = xs[0]
    perm = attrs.get("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


def _pad(attrs: dict, xs: Inputs) -> Tensor:
    x = xs[0]
    if attrs.get("mode", "constant") != "constant":
        raise _Unsupported(f"Pad mode {attrs.get('mode')!r} (only 'constant')")
    if "pads" in attrs:                             # opset < 11
        pads, value, axes = list(attrs["pads"]), float(attrs.get("value", 0.0)), None
    else:
        pads = _ints(xs[1])
        value = float(xs[2].reshape(-1)[0]) if len(xs) > 2 and xs[2] is not None and xs[2].numel() else 0.0
        axes = _ints(xs[3]) if len(xs) > 3 and xs[3] is not None else None
    rank = x.dim()
    axes = [a % rank for a in axes] if axes is not None else list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    torch_pads: list[int] = []
    for a in reversed(range(rank)):                 # torch: last dimension first
        torch_pads += [begin[a], end[a]]
    return F.pad(x.double(), torch_pads, value=value)


def _conv_pads(attrs: dict, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) with ``auto_pad`` resolved."""
    n = len(spatial)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * 2 * n))
    elif auto == "VALID":
        pads = [0] * 2 * n
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begins.append(small if auto == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        pads = begins + ends
    else:
        raise ValueError(f"unknown auto_pad {auto!r}")
    if len(pads) != 2 * n:
        raise ValueError(f"pads {pads} do not fit {n} spatial dimensions")
    return pads


def _conv(attrs: dict, xs: Inputs) -> Tensor:
    x, weight, bias = xs[0].double(), xs[1].double(), (xs[2].double() if len(xs) > 2 and xs[2] is not None
                                                       else None)
    n = x.dim() - 2
    if n not in (1, 2) or weight.dim() != n + 2:
        raise _Unsupported(f"Conv on a {x.dim()}-D input (1-D and 2-D convolutions only)")
    kernel = list(attrs.get("kernel_shape") or weight.shape[2:])
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    pads = _conv_pads(attrs, x.shape[2:], kernel, strides, dilations)
    torch_pads: list[int] = []
    for a in reversed(range(n)):
        torch_pads += [pads[a], pads[a + n]]
    x = F.pad(x, torch_pads)
    conv = F.conv1d if n == 1 else F.conv2d
    return conv(x, weight, bias, stride=strides, dilation=dilations, groups=int(attrs.get("group", 1)))


def _batchnorm(attrs: dict, xs: Inputs) -> Tensor:
    if attrs.get("training_mode", 0):
        raise _Unsupported("BatchNormalization in training mode (batch statistics are not affine)")
    x = xs[0].double()
    scale, shift, mean, var = (t.double() for t in xs[1:5])
    view = [-1] + [1] * (x.dim() - 2)
    factor = scale / torch.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    return (x - mean.reshape(view)) * factor.reshape(view) + shift.reshape(view)


@dataclass(frozen=True)
class _Windows:
    """Pooling windows on one channel: ``index`` (``out x k``; ``-1`` outside the input), ``inside``
    (the position is inside the input), ``padded`` (inside input or explicit pads), output spatial shape."""

    index: np.ndarray
    inside: np.ndarray
    padded: np.ndarray
    out_shape: tuple[int, ...]


def _pool_windows(attrs: dict, spatial: Sequence[int]) -> _Windows:
    n = len(spatial)
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    pads = _conv_pads(attrs, spatial, kernel, strides, dilations)
    ceil = bool(attrs.get("ceil_mode", 0))
    positions, valid, padded, outs = [], [], [], []
    for d, (size, k, s, dil) in enumerate(zip(spatial, kernel, strides, dilations)):
        begin, end = pads[d], pads[d + n]
        span = size + begin + end - (k - 1) * dil - 1
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= size + begin:   # a last window starting in the end padding is dropped
            out -= 1
        if out <= 0:
            raise ValueError(f"pooling window {kernel} does not fit an input of {list(spatial)}")
        pos = np.arange(out)[:, None] * s - begin + np.arange(k)[None, :] * dil
        positions.append(pos)
        valid.append((pos >= 0) & (pos < size))
        padded.append(pos < size + end)
        outs.append(out)
    # combine the per-dimension (out_d x k_d) arrays into (prod out) x (prod k), C order
    flat = np.zeros([1] * (2 * n), dtype=np.int64)
    ok = np.ones_like(flat, dtype=bool)
    inpad = np.ones_like(flat, dtype=bool)
    stride = int(np.prod(spatial[1:], dtype=np.int64)) if n > 1 else 1
    for d in range(n):
        shape = [1] * (2 * n)
        shape[d], shape[n + d] = positions[d].shape
        flat = flat + positions[d].reshape(shape) * stride
        ok = ok & valid[d].reshape(shape)
        inpad = inpad & padded[d].reshape(shape)
        stride //= int(spatial[d + 1]) if d + 1 < n else 1
    size_out, size_k = int(np.prod(outs)), int(np.prod(kernel))
    shape = outs + kernel
    ok = np.broadcast_to(ok, shape).reshape(size_out, size_k)
    index = np.where(ok, np.broadcast_to(flat, shape).reshape(size_out, size_k), -1)
    return _Windows(index, ok, np.broadcast_to(inpad, shape).reshape(size_out, size_k), tuple(outs))


def _pool_input(x: Tensor, op: str) -> tuple[int, tuple[int, ...]]:
    if x.dim() != 4 or x.shape[0] != 1:
        raise _Unsupported(f"{op} on an input of shape {tuple(x.shape)} (2-D pooling of 1 x C x H x W only)")
    return int(x.shape[1]), tuple(int(d) for d in x.shape[2:])


def _avgpool(attrs: dict, xs: Inputs) -> Tensor:
    x = xs[0].double()
    channels, spatial = _pool_input(x, "AveragePool")
    windows = _pool_windows(attrs, spatial)
    if np.any(windows.inside.sum(1) == 0):
        raise ValueError("an average-pool window lies entirely in the padding")
    counts = windows.padded.sum(1) if attrs.get("count_include_pad", 0) else windows.inside.sum(1)
    cells = int(np.prod(spatial))
    index = torch.from_numpy(np.where(windows.index < 0, cells, windows.index))   # -> the appended zero
    padded = F.pad(x.reshape(channels, cells), (0, 1))
    sums = padded[:, index].sum(-1)
    return (sums / torch.from_numpy(counts.astype(np.float64))).reshape(1, channels, *windows.out_shape)


def _maxpool_layer(attrs: dict, shape: tuple[int, ...]) -> tuple[MaxPool, tuple[int, ...]]:
    channels, spatial = _pool_input(torch.empty(shape), "MaxPool")
    windows = _pool_windows(attrs, spatial)
    count = windows.inside.sum(1)
    if np.any(count == 0):
        raise ValueError("a max-pool window lies entirely in the padding")
    # a window cut by padding repeats one of its own inputs (padding never wins in ONNX MaxPool)
    first = windows.index[np.arange(len(count)), np.argmax(windows.inside, axis=1)]
    index = np.where(windows.inside, windows.index, first[:, None])
    cells = int(np.prod(spatial))
    groups = (np.arange(channels)[:, None, None] * cells + index[None]).reshape(-1, index.shape[1])
    return MaxPool(groups, channels * cells), (1, channels, *windows.out_shape)


# constant-only ops (numpy semantics on constants)

def _np(t: Tensor) -> np.ndarray:
    return t.numpy()


def _gather(attrs: dict, xs: Inputs) -> Tensor:
    data, indices = _np(xs[0]), _np(xs[1]).astype(np.int64)
    axis = int(attrs.get("axis", 0)) % data.ndim
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return _to_torch(np.take(data, indices, axis=axis))


def _concat(attrs: dict, xs: Inputs) -> Tensor:
    arrays = [_np(t) for t in xs if t is not None]
    return _to_torch(np.concatenate(arrays, axis=int(attrs["axis"])))


def _slice(attrs: dict, xs: Inputs) -> Tensor:
    data = _np(xs[0])
    if "starts" in attrs:                           # opset < 10
        starts, ends, axes, steps = list(attrs["starts"]), list(attrs["ends"]), attrs.get("axes"), None
    else:
        starts, ends = _ints(xs[1]), _ints(xs[2])
        axes = _ints(xs[3]) if len(xs) > 3 and xs[3] is not None else None
        steps = _ints(xs[4]) if len(xs) > 4 and xs[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, a, step in zip(starts, ends, axes, steps):
        index[a % data.ndim] = slice(s, e, step)
    return _to_torch(data[tuple(index)])


def _relu(attrs: dict, xs: Inputs) -> Tensor:
    return torch.relu(xs[0])


class _Unsupported(Exception):
    """An op is known but used in a way that is not supported (message: what)."""


@dataclass(frozen=True)
class _Op:
    fn: Callable[[dict, Inputs], Tensor]
    dynamic: tuple[int, ...] = (0,)       #: input positions that may hold the activation
    layout: bool = False                  #: only rearranges values (identity on the flat C-order vector)


#: ops allowed on the activation (affine), also evaluated on constants
AFFINE_OPS: dict[str, _Op] = {
    "Gemm": _Op(_gemm, (0, 1)), "MatMul": _Op(_matmul, (0, 1)),
    "Add": _Op(_add, (0, 1)), "Sub": _Op(_sub, (0, 1)), "Mul": _Op(_mul, (0, 1)), "Div": _Op(_div, (0,)),
    "Neg": _Op(_neg), "Conv": _Op(_conv), "AveragePool": _Op(_avgpool), "BatchNormalization": _Op(_batchnorm),
    "Pad": _Op(_pad), "Transpose": _Op(_transpose),
    "Flatten": _Op(_flatten, layout=True), "Reshape": _Op(_reshape, layout=True),
    "Squeeze": _Op(_squeeze, layout=True), "Unsqueeze": _Op(_unsqueeze, layout=True),
    "Identity": _Op(_identity, layout=True), "Dropout": _Op(_dropout, layout=True),
    "Cast": _Op(_cast, layout=True),
}
#: ops evaluated only when all their inputs are constants
CONSTANT_OPS: dict[str, _Op] = {"Gather": _Op(_gather, ()), "Concat": _Op(_concat, ()), "Slice": _Op(_slice, ()),
                                "Relu": _Op(_relu, ())}
SUPPORTED = sorted(set(AFFINE_OPS) | {"Relu", "MaxPool", "Constant", "Shape"})


# --------------------------------------------------------------------------- the graph walk

class _Run:
    """Consecutive affine ops on the activation, probed into one :class:`Affine` when the run ends."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.in_shape = shape
        self.fns: list[Callable[[Tensor], Tensor]] = []
        self.layout_only = True

    def __call__(self, x: Tensor) -> Tensor:
        for fn in self.fns:
            x = fn(x)
        return x


def _input_shape(value_info, src: str) -> tuple[tuple[int, ...], bool]:
    """The example's full ONNX shape (batch fixed to 1) and whether it has a batch dimension."""
    import onnx

    tensor = value_info.type.tensor_type
    if value_info.type.WhichOneof("value") != "tensor_type" or tensor.elem_type not in (
            onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
        raise NetworkError(f"{src}: input {value_info.name!r} is not a floating-point tensor")
    if not tensor.HasField("shape"):
        raise NetworkError(f"{src}: input {value_info.name!r} has no shape")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    batched = len(dims) >= 2 and dims[0] in (None, 1)
    if batched:
        dims[0] = 1
    if not dims or any(d is None or d <= 0 for d in dims):
        raise NetworkError(f"{src}: input {value_info.name!r} has shape {_dims_text(tensor)}; only the first "
                           "(batch) dimension may be symbolic")
    return tuple(dims), batched


def _dims_text(tensor) -> str:
    return "[" + ", ".join(d.dim_param or str(d.dim_value) if (d.dim_param or d.dim_value) else "?"
                           for d in tensor.shape.dim) + "]"


def from_onnx(path: Union[str, Path], *, max_bytes: int = MAX_BYTES) -> Network:
    """The :class:`Network` of the ONNX file at ``path`` (see the module docstring for what is supported).

    Raises :class:`NetworkError` for a missing, oversized, corrupt or invalid file, and for any graph
    that is not a chain of supported ops on one activation (naming the node and its op type).
    """
    from onnx import numpy_helper

    path = Path(path)
    model = _load_model(path, max_bytes)
    graph = model.graph
    src = path.name

    consts: dict[str, Tensor] = {}
    for tensor in graph.initializer:
        try:
            consts[tensor.name] = _to_torch(numpy_helper.to_array(tensor))
        except (ValueError, TypeError) as exc:
            raise NetworkError(f"{src}: initializer {tensor.name!r}: {exc}") from None
    dynamic = [v for v in graph.input if v.name not in consts]
    if len(dynamic) != 1:
        names = [v.name for v in dynamic]
        raise NetworkError(f"{src}: the graph has {len(dynamic)} inputs that are not initializers ({names}); "
                           "a verifiable network has exactly one")
    if len(graph.output) != 1:
        raise NetworkError(f"{src}: the graph has {len(graph.output)} outputs; a verifiable network has one")
    shape, batched = _input_shape(dynamic[0], src)
    input_shape = shape[1:] if batched else shape

    current = dynamic[0].name                       # the one activation tensor
    shapes: dict[str, tuple[int, ...]] = {current: shape}   # every activation seen (for Shape)
    side_outputs: dict[str, str] = {}               # outputs that are not supported (masks, indices)
    layers: list[Layer] = []
    run = _Run(shape)

    def flush() -> None:
        nonlocal run
        if run.fns and not run.layout_only:
            layers.append(probe_affine(torch.func.vmap(run), run.in_shape))
        run = _Run(shape)

    for index, node in enumerate(graph.node):
        label = f"#{index} {node.name!r}" if node.name else f"#{index}"
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        where = f"{src}: node {label} ({op})"
        attrs = _attributes(node)
        names = list(node.input)
        for name in names:
            if name and name not in consts and name not in shapes:
                if name in side_outputs:
                    raise NetworkError(f"{where}: uses {name!r}, the {side_outputs[name]}, which is not supported")
                raise NetworkError(f"{where}: input {name!r} is not produced by an earlier node (graph not "
                                   "topologically sorted?)")
        for extra in node.output[1:]:
            if extra:
                side_outputs[extra] = f"extra output of node {label} ({op})"
        out = node.output[0] if node.output else ""
        dyn = [k for k, name in enumerate(names) if name in shapes]

        try:
            if op == "Constant":
                values = [v for k, v in attrs.items() if k.startswith("value")]
                try:
                    if len(values) != 1 or values[0] is None or isinstance(values[0], str):
                        raise ValueError("not one tensor")
                    consts[out] = _to_torch(np.asarray(values[0]))
                except ValueError:
                    raise _Unsupported("a Constant that is not one numeric tensor") from None
                continue
            if op == "Shape":
                source_shape = shapes[names[0]] if names[0] in shapes else tuple(consts[names[0]].shape)
                start, end = attrs.get("start", 0), attrs.get("end")
                consts[out] = torch.tensor(source_shape[start:end], dtype=torch.int64)
                continue
            if not dyn:                             # constant folding
                spec = AFFINE_OPS.get(op) or CONSTANT_OPS.get(op)
                if spec is None:
                    raise _Unsupported(f"unsupported op {op} (on constants)")
                consts[out] = spec.fn(attrs, [consts[n] if n else None for n in names])
                continue
            if len(dyn) > 1:
                raise _Unsupported("combines two activation tensors (a branch or a product); only a chain on "
                                   "one activation is supported")
            if names[dyn[0]] != current:
                raise _Unsupported(f"reads activation {names[dyn[0]]!r} after it was already used (a branch "
                                   "or skip connection); only a chain is supported")
            if op == "Relu":
                flush()
                layers.append(ReLU(int(np.prod(shape))))
            elif op == "MaxPool":
                flush()
                pool, shape = _maxpool_layer(attrs, shape)
                layers.append(pool)
                run = _Run(shape)
            elif op in AFFINE_OPS:
                spec = AFFINE_OPS[op]
                if dyn[0] not in spec.dynamic:
                    raise _Unsupported(f"the activation as input {dyn[0]} is not affine (supported: input "
                                       f"{' or '.join(str(k) for k in spec.dynamic)})")
                operands = [consts[n] if n and k != dyn[0] else None for k, n in enumerate(names)]
                position = dyn[0]

                def step(x: Tensor, spec=spec, attrs=attrs, operands=operands, position=position) -> Tensor:
                    xs = list(operands)
                    xs[position] = x
                    return spec.fn(attrs, xs)

                with torch.no_grad():
                    result = step(torch.zeros(shape, dtype=torch.float64))
                if not result.is_floating_point():
                    raise _Unsupported("the activation turned into a non-float tensor")
                run.fns.append(step)
                run.layout_only = run.layout_only and spec.layout
                shape = tuple(int(d) for d in result.shape)
            else:
                raise _Unsupported(f"unsupported op {op} on the activation")
        except NetworkError:
            raise
        except _Unsupported as exc:
            raise NetworkError(f"{where}: {exc} (supported: {', '.join(SUPPORTED)})") from None
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise NetworkError(f"{where}: cannot be applied to an input of shape {list(shape)}: {exc}") from None
        current = out
        shapes[current] = shape

    output = graph.output[0].name
    if output != current:
        what = "a constant" if output in consts else "not the last activation (a branch)"
        raise NetworkError(f"{src}: graph output {output!r} is {what}; a verifiable network's output is the end "
                           "of its chain")
    flush()
    output_shape = shape[1:] if batched and len(shape) >= 2 and shape[0] == 1 else shape
    return Network(input_shape, compose(layers), source=src, output_shape=tuple(output_shape) or (1,))


__all__ = ["MAX_BYTES", "from_onnx"]
