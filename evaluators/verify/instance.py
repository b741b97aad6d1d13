"""One VNN-COMP instance: an ONNX network and a VNNLIB specification, loaded and checked against each
other, verified, and the answer written the way VNN-COMP tools write it.

The result file (VNN-COMP 2022): the first line is the result (``sat``, ``unsat``, ``timeout``,
``unknown``, ``error``); after ``sat`` comes the counterexample as one s-expression, inputs then outputs,
``((X_0 v) (X_1 v) ... (Y_0 v) ...)``, one pair per line. The outputs are the ones onnxruntime computes
on the *original* file for that input (cast to the model's float type and reshaped to its input
shape), and ``sat`` is only ever reported when they meet the specification (:func:`verify`'s ``check``).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from threedb.sim.errors import ThreeDBError

#: The five answers of VNN-COMP, in the order of its scoring.
RESULTS = ("sat", "unsat", "timeout", "unknown", "error")


class InstanceError(ThreeDBError, ValueError):
    """An instance's files cannot be used (missing, unsupported operator, malformed VNNLIB, sizes that do
    not match); the message names the file and the place."""


class OnnxChecker:
    """The original network's outputs by onnxruntime for a flat input: the input cast to the model's
    float type and reshaped to its declared input shape (a symbolic batch dimension taken as 1)."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1   # the machine's cores are shared; one example at a time
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InstanceError(f"{self.path}: onnxruntime cannot load it: {str(exc).strip()[:300]}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in first.shape)
        self.dtype = np.float64 if first.type == "tensor(double)" else np.float32

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64).reshape(-1)
        if flat.size != self.size:
            raise InstanceError(f"{self.path}: its input {self.input_name} has {self.size} values "
                                f"(shape {list(self.shape)}), the specification {flat.size}")
        out = self.session.run(None, {self.input_name: flat.astype(self.dtype).reshape(self.shape)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)


@dataclass
class Instance:
    """A loaded instance: the verifier's network, the specification's boxes and the onnxruntime check."""

    onnx: Path
    vnnlib: Path
    network: Any                 #: threedb.robustness.verification.Network
    specs: list                  #: [Specification, ...] (one per input box)
    check: OnnxChecker
    prepare_seconds: float       #: reading both files and checking them against each other


def load_instance(onnx: str | Path, vnnlib: str | Path) -> Instance:
    """Read ``onnx`` and ``vnnlib``; every problem is one :class:`InstanceError` naming the file and place."""
    from threedb.robustness.verification.network import NetworkError
    from threedb.robustness.verification.onnx_import import from_onnx
    from threedb.robustness.verification.spec import SpecificationError
    from threedb.robustness.verification.vnnlib import check_instance, parse_vnnlib

    start = time.perf_counter()
    onnx, vnnlib = Path(onnx), Path(vnnlib)
    for path, what in ((onnx, "network"), (vnnlib, "specification")):
        if not path.is_file():
            raise InstanceError(f"{path}: {what} file not found")
    try:
        network = from_onnx(onnx)
        specs = parse_vnnlib(vnnlib)
        check_instance(network, specs, onnx, vnnlib)
    except (NetworkError, SpecificationError) as exc:
        raise InstanceError(str(exc)) from None
    except OSError as exc:
        raise InstanceError(f"{exc.filename or onnx}: cannot be read: {exc.strerror or exc}") from None
    check = OnnxChecker(onnx)
    if check.size != network.in_size:
        raise InstanceError(f"{onnx}: onnxruntime sees an input of {check.size} values, the converted "
                            f"network {network.in_size}")
    return Instance(onnx, vnnlib, network, specs, check, time.perf_counter() - start)


def verify_instance(instance: Instance, options: Any) -> Any:
    """:func:`threedb.robustness.verification.verifier.verify` on ``instance`` with ``options``, the
    counterexample (if any) confirmed by onnxruntime on the original file."""
    from threedb.robustness.verification.verifier import verify

    return verify(instance.network, instance.specs, options, check=instance.check)


def format_assignment(x: np.ndarray, y: np.ndarray) -> str:
    """``((X_0 v)\\n (X_1 v)\\n ... (Y_0 v) ...)``: VNN-COMP 2022's counterexample; values round-trip."""
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.asarray(x).reshape(-1))]
    pairs += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.asarray(y).reshape(-1))]
    return "(" + "\n ".join(pairs) + ")"


def result_text(status: str, x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None) -> str:
    """The result file's text: the result line, and after ``sat`` the counterexample."""
    if status == "sat":
        if x is None or y is None:
            raise ValueError("a sat result needs its counterexample and outputs")
        return f"sat\n{format_assignment(x, y)}\n"
    return f"{status}\n"


_PAIR = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


def read_result(text: str) -> tuple[str, Optional[np.ndarray], Optional[np.ndarray]]:
    """``(result, x, y)`` of a result file's text (``x``, ``y`` ``None`` without a counterexample)."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("empty result file")
    status = lines[0].strip()
    found: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, index, value in _PAIR.findall("\n".join(lines[1:])):
        found[kind][int(index)] = float(value)
    if not found["X"]:
        return status, None, None
    x = np.array([found["X"][i] for i in range(len(found["X"]))])
    y = np.array([found["Y"][j] for j in range(len(found["Y"]))])
    return status, x, y


def describe(instance: Instance) -> str:
    """``5 inputs, 2 outputs, 1 box, ReLU layers [2, 2]`` for the summary line."""
    net = instance.network
    relus = [net.layers[k].out_size for k in net.relu_layers()]
    boxes = len(instance.specs)
    return (f"{net.in_size} inputs, {net.out_size} outputs, {boxes} box{'es' if boxes != 1 else ''}, "
            f"ReLU layers {relus}")


def summary_line(instance: Instance, result: Any) -> str:
    """One line for stderr: the result, its time, the step that decided and the instance's size."""
    how = f" by {result.method}" if result.method else ""
    unstable = result.stats.get("unstable")
    extra = f", unstable ReLUs {unstable}" if unstable is not None else ""
    note = f"; {result.message}" if result.message else ""
    return (f"{result.status} in {result.seconds:.2f} s{how} ({instance.onnx.name}, {instance.vnnlib.name}: "
            f"{describe(instance)}{extra}; prepared in {instance.prepare_seconds:.2f} s){note}")


__all__ = ["Instance", "InstanceError", "OnnxChecker", "RESULTS", "describe", "format_assignment", "load_instance",
           "read_result", "result_text", "summary_line", "verify_instance"]
