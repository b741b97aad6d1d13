"""Networks for the complete verifier: from PyTorch and from ONNX, checked against the module itself and
against onnxruntime (the shared VNN-COMP 2021 networks and small graphs built with onnx.helper)."""
from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from threedb.robustness.models import Normalized
from threedb.robustness.verification import (Affine, MaxPool, NetworkError, ReLU, from_onnx, from_torch,
                                             parse_vnnlib, probe_affine)

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vnncomp2021"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared VNN-COMP data not found at {DATA}")
BENCHMARKS = ("test", "mnistfc", "verivital")


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's outputs for flat inputs ``x`` (one run per example: some files have batch 1 fixed)."""
    model = onnx.load(str(path))
    constants = {t.name for t in model.graph.initializer}
    session = _session(path)
    (dynamic,) = [i for i in session.get_inputs() if i.name not in constants]
    shape = [d if isinstance(d, int) else 1 for d in dynamic.shape]
    return np.stack([session.run(None, {dynamic.name: row.reshape(shape).astype(np.float32)})[0].reshape(-1)
                     for row in x])


def _assert_close(ours: np.ndarray, theirs: np.ndarray, rtol: float = 1e-4) -> None:
    scale = max(float(np.abs(theirs).max()), 1e-6)
    assert np.abs(ours - theirs).max() <= rtol * scale, (ours, theirs)


# --------------------------------------------------------------------------- from_torch

def test_from_torch_matches_the_module() -> None:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    bn = body[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.2, 0.2)
    model = Normalized(body, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3]).eval()

    net = from_torch(model, (3, 8, 8))
    assert [type(layer) for layer in net.layers] == [Affine, ReLU, MaxPool, Affine]
    assert net.in_size == 192 and net.out_size == 10
    x = torch.rand(6, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = model.double()(x).numpy()
    np.testing.assert_allclose(net(x.reshape(6, -1).numpy()), expected, rtol=1e-9, atol=1e-9)
    # and back to torch
    np.testing.assert_allclose(net.to_torch(torch.float64)(x).detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_from_torch_max_pool_with_ceil_mode_matches_torch() -> None:
    model = nn.Sequential(nn.MaxPool2d(1, 2, ceil_mode=True), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)).double()
    net = from_torch(model, (2, 4, 4))
    x = torch.rand(4, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(net(x.reshape(4, -1).numpy()), model(x).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_in,n_out", [(50, 7), (7, 50)])    # reverse-mode and forward probing
def test_probe_affine_recovers_a_linear_layer_exactly(n_in: int, n_out: int) -> None:
    torch.manual_seed(1)
    layer = nn.Linear(n_in, n_out).double()
    affine = probe_affine(layer, (n_in,))
    np.testing.assert_allclose(affine.weight, layer.weight.detach().numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(affine.bias, layer.bias.detach().numpy(), rtol=0, atol=1e-14)


def test_from_torch_refuses_an_unsupported_layer() -> None:
    with pytest.raises(NetworkError, match="Sigmoid at position 1"):
        from_torch(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()), (4,))


# --------------------------------------------------------------------------- shared ONNX files

def _instances() -> dict[Path, list[Path]]:
    """Every shared .onnx file with the .vnnlib files its benchmark pairs it with."""
    out: dict[Path, list[Path]] = {}
    for bench in BENCHMARKS:
        folder = DATA / bench
        for row in csv.reader((folder / f"{bench}_instances.csv").read_text().splitlines()):
            if row:
                out.setdefault(folder / row[0].strip(), []).append(folder / row[1].strip())
    return out


@functools.lru_cache(maxsize=None)
def _network(path: Path):
    return from_onnx(path)


def _shared_onnx() -> list[Path]:
    return sorted(DATA.glob("*/*.onnx")) if DATA.is_dir() else []


@needs_data
def test_every_shared_onnx_file_belongs_to_an_instance() -> None:
    files = _shared_onnx()
    assert len(files) == 10
    assert set(files) == set(_instances())


@needs_data
@pytest.mark.parametrize("path", _shared_onnx(), ids=lambda p: p.name)
def test_shared_onnx_matches_onnxruntime_inside_its_spec_boxes(path: Path) -> None:
    net = _network(path)
    rng = np.random.default_rng(0)
    specs = [spec for vnnlib in _instances()[path][:3] for spec in parse_vnnlib(vnnlib)]
    assert specs
    points = []
    for spec in specs:
        assert spec.n_inputs == net.in_size and spec.n_outputs == net.out_size
        points.append(rng.uniform(spec.lower, spec.upper, size=(6, spec.n_inputs)))
        points.append(np.stack([spec.lower, spec.upper]))
    x = np.concatenate(points)
    _assert_close(net(x), _run_ort(path, x))


@needs_data
def test_shared_onnx_layers() -> None:
    kinds = lambda name: [type(layer).__name__ for layer in _network(name).layers]  # noqa: E731
    assert kinds(DATA / "mnistfc" / "mnist-net_256x2.onnx") == ["Affine", "ReLU", "Affine", "ReLU", "Affine"]
    assert _network(DATA / "mnistfc" / "mnist-net_256x2.onnx").relu_layers() == [1, 3]
    # conv, ReLU, (zero) Pad + average pool + flatten + Gemm folded into one affine map
    assert kinds(DATA / "verivital" / "Convnet_avgpool.onnx") == ["Affine", "ReLU", "Affine"]
    assert kinds(DATA / "verivital" / "Convnet_maxpool.onnx") == ["Affine", "ReLU", "MaxPool", "Affine"]
    maxpool = _network(DATA / "verivital" / "Convnet_maxpool.onnx")
    assert maxpool.input_shape == (1, 28, 28) and maxpool.output_shape == (10,)
    assert maxpool.layers[2].groups.shape == (32 * 6 * 6, 16)
    tiny = _network(DATA / "test" / "test_tiny.onnx")      # a rank-1 input: no batch dimension
    assert tiny.input_shape == (1,) and tiny.out_size == 1


@needs_data
def test_truncated_missing_and_garbage_onnx_files_are_refused(tmp_path: Path) -> None:
    data = (DATA / "mnistfc" / "mnist-net_256x2.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    for keep in (len(data) // 2, len(data) - 100, 40):
        cut.write_bytes(data[:keep])
        with pytest.raises(NetworkError, match="cut.onnx"):
            from_onnx(cut)
    with pytest.raises(NetworkError, match="no such ONNX file"):
        from_onnx(tmp_path / "absent.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(NetworkError, match="empty"):
        from_onnx(tmp_path / "empty.onnx")
    (tmp_path / "text.onnx").write_text("(declare-const X_0 Real)\n" * 20)
    with pytest.raises(NetworkError, match="text.onnx"):
        from_onnx(tmp_path / "text.onnx")
    with pytest.raises(NetworkError, match="more than"):
        from_onnx(DATA / "mnistfc" / "mnist-net_256x2.onnx", max_bytes=1000)


# --------------------------------------------------------------------------- graphs built here

def _save(tmp_path: Path, name: str, nodes: list, input_shape: list, output: str, constants: dict,
          opset: int = 13, out_rank: int = 2) -> Path:
    out_shape = [f"d{i}" for i in range(out_rank)]       # symbolic: the checker wants a rank
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def _compare(path: Path, n_in: int, seed: int = 0) -> None:
    net = from_onnx(path)
    assert net.in_size == n_in
    x = np.random.default_rng(seed).uniform(-1, 1, size=(8, n_in))
    _assert_close(net(x), _run_ort(path, x))


def test_cnn_graph_with_normalisation_dynamic_reshape_and_gemm(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["s"], name="norm_sub"),
        helper.make_node("Div", ["s", "std"], ["n"], name="norm_div"),
        helper.make_node("Conv", ["n", "w", "b"], ["c"], name="conv", pads=[1, 0, 0, 1], strides=[2, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "rmean", "rvar"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 0],
                         ceil_mode=1),
        # x.view(x.size(0), -1) as exporters write it
        helper.make_node("Shape", ["p"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["y"], alpha=0.5, beta=2.0),
    ]
    constants = {"mean": np.array([[[[0.5]]]], np.float32), "std": np.array([[[[0.25]]]], np.float32),
                 "w": _f32(rng, 3, 1, 3, 3), "b": _f32(rng, 3), "scale": _f32(rng, 3), "shift": _f32(rng, 3),
                 "rmean": _f32(rng, 3), "rvar": rng.uniform(0.5, 2, 3).astype(np.float32),
                 "zero": np.array(0, np.int64), "axes0": np.array([0], np.int64)}
    # conv: H (6+1-3)//2+1 = 3, W (8+1-3)//1+1 = 7; pool (ceil, H end pad 1): H ceil(2/2)+1 = 2, W ceil(5/2)+1 = 4
    constants["fc"] = _f32(rng, 3 * 2 * 4, 5)          # transB = 0
    constants["fcb"] = _f32(rng, 1, 5)
    path = _save(tmp_path, "cnn", nodes, ["batch", 1, 6, 8], "y", constants)
    net = from_onnx(path)
    assert [type(layer) for layer in net.layers] == [Affine, ReLU, MaxPool, Affine]
    assert net.input_shape == (1, 6, 8) and net.output_shape == (5,)
    _compare(path, 48)


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 2], strides=[2, 3], pads=[0, 1, 2, 0], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 0], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    # W: ceil((8 + 1 - 2) / 2) + 1 = 5 windows, the last starting in the end padding: dropped (4)
    dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1, count_include_pad=1),
    dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER", count_include_pad=1),
], ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_pooling_matches_onnxruntime(tmp_path: Path, op: str, attrs: dict) -> None:
    if op == "MaxPool":
        attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
    nodes = [helper.make_node(op, ["x"], ["p"], **attrs), helper.make_node("Flatten", ["p"], ["y"])]
    path = _save(tmp_path, "pool", nodes, [1, 2, 7, 8], "y", {})
    _compare(path, 2 * 7 * 8)


@pytest.mark.parametrize("attrs", [dict(auto_pad="SAME_UPPER", strides=[2, 2]),
                                   dict(auto_pad="SAME_LOWER", strides=[1, 2]),
                                   dict(pads=[2, 1, 2, 1], dilations=[2, 1]),
                                   dict(group=2, pads=[0, 2, 1, 0], dilations=[1, 2]),
                                   dict(auto_pad="VALID", strides=[1, 3])], ids=str)
def test_conv_variants_match_onnxruntime(tmp_path: Path, attrs: dict) -> None:
    rng = np.random.default_rng(1)
    group = attrs.get("group", 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], **attrs)]
    path = _save(tmp_path, "conv", nodes, [1, 4, 7, 8], "y", {"w": _f32(rng, 6, 4 // group, 3, 3)}, out_rank=4)
    _compare(path, 4 * 7 * 8)


def test_layout_ops_and_constants_match_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["a"]),                       # [1, 12] -> [1, 3, 4]
        helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["t", "axes1"], ["u"]),                     # [1, 1, 4, 3]
        helper.make_node("Pad", ["u", "pads", "half"], ["pd"], mode="constant"),   # [1, 1, 5, 5]
        helper.make_node("Squeeze", ["pd", "axes1"], ["sq"]),
        helper.make_node("Mul", ["three", "sq"], ["m"]),
        helper.make_node("Neg", ["m"], ["ng"]),
        helper.make_node("Flatten", ["ng"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["mm"]),
        helper.make_node("Add", ["bias", "mm"], ["ad"]),
        helper.make_node("Dropout", ["ad"], ["dr"]),
        helper.make_node("Identity", ["dr"], ["y"]),
    ]
    constants = {"shape": np.array([0, 3, 4], np.int64), "axes1": np.array([1], np.int64),
                 "pads": np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64), "half": np.array(0.5, np.float32),
                 "three": np.array(3.0, np.float32), "w": _f32(rng, 25, 4), "bias": _f32(rng, 4)}
    path = _save(tmp_path, "layout", nodes, [1, 12], "y", constants)
    assert [type(layer) for layer in from_onnx(path).layers] == [Affine]
    _compare(path, 12)


def test_layout_only_runs_add_no_layer(tmp_path: Path) -> None:
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Relu", ["f"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    path = _save(tmp_path, "relu_only", nodes, [1, 2, 3], "y", {"shape": np.array([1, 3, 2], np.int64)},
                 out_rank=3)
    net = from_onnx(path)
    assert [type(layer) for layer in net.layers] == [ReLU]
    assert net.output_shape == (3, 2)
    _compare(path, 6)


def test_unsupported_op_is_refused_naming_file_op_and_node(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], name="fc1", transB=1),
             helper.make_node("Sigmoid", ["g"], ["y"], name="act1")]
    path = _save(tmp_path, "sigmoid", nodes, [1, 4], "y", {"w": _f32(rng, 3, 4)})
    with pytest.raises(NetworkError, match=r"sigmoid\.onnx: node #1 'act1' \(Sigmoid\): unsupported op Sigmoid"):
        from_onnx(path)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])]   # unnamed
    path = _save(tmp_path, "softmax", nodes, [1, 4], "y", {})
    with pytest.raises(NetworkError, match=r"softmax\.onnx: node #1 \(Softmax\)"):
        from_onnx(path)


def test_graphs_that_are_not_a_chain_are_refused(tmp_path: Path) -> None:
    residual = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                helper.make_node("Add", ["r", "x"], ["y"], name="skip")]
    with pytest.raises(NetworkError, match=r"'skip' \(Add\): combines two activation tensors"):
        from_onnx(_save(tmp_path, "residual", residual, [1, 4], "y", {}))
    fork = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["a"]),
            helper.make_node("Neg", ["r"], ["y"], name="second_use")]
    with pytest.raises(NetworkError, match=r"'second_use' \(Neg\): reads activation 'r' after it was already"):
        from_onnx(_save(tmp_path, "fork", fork, [1, 4], "y", {}))
    reciprocal = [helper.make_node("Div", ["one", "x"], ["y"], name="inv")]
    with pytest.raises(NetworkError, match=r"'inv' \(Div\): the activation as input 1 is not affine"):
        from_onnx(_save(tmp_path, "reciprocal", reciprocal, [1, 4], "y", {"one": np.ones(4, np.float32)}))

    graph = helper.make_graph([helper.make_node("Add", ["x", "z"], ["y"])], "two_inputs",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "z")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "two_inputs.onnx"))
    with pytest.raises(NetworkError, match=r"two_inputs\.onnx: the graph has 2 inputs that are not initializers"):
        from_onnx(tmp_path / "two_inputs.onnx")


class _Exported(nn.Module):
    """Normalisation, conv, BN, ReLU, max-pool, ceil-mode average pool and ``view(x.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 10)    # 16 -> conv 8 -> max 4 -> avg ceil((4 + 2 - 2) / 2) + 1 = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(nn.functional.max_pool2d(torch.relu(self.bn(self.conv((x - 0.13) / 0.31))), 2))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("opset", [11, 17])
def test_torch_onnx_export_round_trip(tmp_path: Path, opset: int) -> None:
    import warnings

    torch.manual_seed(0)
    model = _Exported().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "exported.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, torch.zeros(1, 1, 16, 16), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=opset)
    net = from_onnx(path)
    assert [type(layer) for layer in net.layers] == [Affine, ReLU, MaxPool, Affine]
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        expected = model(x).numpy()
    _assert_close(net(x.reshape(5, -1).numpy()), expected)
    _assert_close(net(x.reshape(5, -1).numpy()), _run_ort(path, x.reshape(5, -1).numpy().astype(np.float64)))
