"""VNN-LIB properties: the shared VNN-COMP 2021 files, the supported constructs, and one clear error (file
and line) for each malformed text."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from threedb.robustness.verification import (SpecificationError, check_instance, from_onnx, local_robustness,
                                             parse_vnnlib)

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vnncomp2021"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared VNN-COMP data not found at {DATA}")


def _raw_bounds(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The input bounds read with a plain regular expression (an independent reading of simple files)."""
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    for op, i, value in re.findall(r"\(assert \((<=|>=) X_(\d+) ([-+0-9.eE]+)\)\)", path.read_text()):
        (hi if op == "<=" else lo)[int(i)] = float(value)
    return lo, hi


@needs_data
def test_every_shared_vnnlib_file_parses() -> None:
    files = sorted(DATA.rglob("*.vnnlib"))
    assert len(files) >= 90
    for path in files:
        specs = parse_vnnlib(path)
        assert specs and all(spec.source.startswith(path.name) for spec in specs)


@needs_data
@pytest.mark.parametrize("folder", ["mnistfc", "verivital/specs/avgpool_specs", "verivital/specs/maxpool_specs"])
def test_mnist_properties_are_one_box_and_nine_disjuncts(folder: str) -> None:
    files = sorted((DATA / folder).glob("*.vnnlib"))
    assert files
    for path in files:
        (spec,) = parse_vnnlib(path)
        label = int(re.search(r"label: (\d+)", path.read_text()).group(1))
        assert spec.n_inputs == 784 and spec.n_outputs == 10
        assert spec.lower.min() >= 0.0 and spec.upper.max() <= 1.0 and np.all(spec.lower <= spec.upper)
        lo, hi = _raw_bounds(path, 784)
        np.testing.assert_array_equal(spec.lower, lo)
        np.testing.assert_array_equal(spec.upper, hi)
        # (>= Y_j Y_label) is Y_label - Y_j <= 0: one row per other class
        assert len(spec.disjuncts) == 9
        others = []
        for c, d in spec.disjuncts:
            assert c.shape == (1, 10) and d.tolist() == [0.0]
            assert c[0, label] == 1.0 and sorted(c[0].tolist()) == [-1.0] + [0.0] * 8 + [1.0]
            others.append(int(np.flatnonzero(c[0] == -1.0)[0]))
        assert sorted(others) == sorted(set(range(10)) - {label})


@needs_data
def test_test_benchmark_properties() -> None:
    (prop,) = parse_vnnlib(DATA / "test" / "test_prop.vnnlib")
    assert prop.n_inputs == 5 and prop.n_outputs == 5
    np.testing.assert_allclose(prop.lower, [-0.30353115613746867, -0.009549296585513092, 0.4933803235848431,
                                            0.3, 0.3])
    np.testing.assert_allclose(prop.upper, [-0.29855281193475053, 0.009549296585513092, 0.49999999998567607,
                                            0.5, 0.5])
    ((c, d),) = prop.disjuncts                # four top-level asserts: one conjunction Y_0 <= Y_j
    np.testing.assert_array_equal(c, [[1, -1, 0, 0, 0], [1, 0, -1, 0, 0], [1, 0, 0, -1, 0], [1, 0, 0, 0, -1]])
    np.testing.assert_array_equal(d, np.zeros(4))
    for name in ("test_small", "test_tiny"):
        (spec,) = parse_vnnlib(DATA / "test" / f"{name}.vnnlib")     # box and output inside one (or (and ...))
        assert spec.lower.tolist() == [-1.0] and spec.upper.tolist() == [1.0]
        ((c, d),) = spec.disjuncts
        assert c.tolist() == [[-1.0]] and d.tolist() == [-100.0]     # Y_0 >= 100
    (nano,) = parse_vnnlib(DATA / "test" / "test_nano.vnnlib")
    assert nano.disjuncts[0][0].tolist() == [[1.0]] and nano.disjuncts[0][1].tolist() == [-1.0]


@needs_data
def test_robust_instances_have_no_violation_at_sampled_points() -> None:
    """On instances every tool proved robust (consensus unsat) no input in the box meets a disjunct, so the
    parsed specification and the imported network must agree that sampled points are not counterexamples."""
    rows = [line.split(",") for line in (DATA / "results" / "mnistfc_consensus.csv").read_text().splitlines()]
    unsat = [(onnx, vnnlib) for onnx, vnnlib, verdict, *_ in rows if verdict == "unsat" and "256x2" in onnx]
    assert len(unsat) == 18
    net = from_onnx(DATA / "mnistfc" / "mnist-net_256x2.onnx")
    rng = np.random.default_rng(0)
    for _, vnnlib in unsat:
        (spec,) = parse_vnnlib(DATA / "mnistfc" / vnnlib)
        check_instance(net, [spec], "mnist-net_256x2.onnx", vnnlib)
        x = np.concatenate([rng.uniform(spec.lower, spec.upper, size=(16, 784)), [spec.lower, spec.upper]])
        assert not any(spec.violated_by(y) for y in net(x)), vnnlib
    # not vacuous: the centre of another class's box violates the property
    labels = {v: int(re.search(r"label: (\d+)", (DATA / "mnistfc" / v).read_text()).group(1)) for _, v in unsat}
    first, other = unsat[0][1], next(v for _, v in unsat if labels[v] != labels[unsat[0][1]])
    (spec,), (elsewhere,) = parse_vnnlib(DATA / "mnistfc" / first), parse_vnnlib(DATA / "mnistfc" / other)
    assert spec.violated_by(net((elsewhere.lower + elsewhere.upper) / 2))


def test_linear_terms_strict_comparisons_and_several_boxes(tmp_path: Path) -> None:
    text = """; two boxes; a box reached twice merges its output cases
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (>= X_1 -1.5e-1))
(assert (<= (* 2 X_1) 0.5))            ; X_1 <= 0.25
(assert (or
    (and (>= X_0 0) (< X_0 1) (<= (+ Y_0 (* 2 Y_1) (- Y_2)) 3))
    (and (<= (- X_0) 0) (<= X_0 1) (> (- Y_0 Y_1) 0.5))
    (and (>= X_0 2) (<= X_0 3) (<= Y_2 (/ Y_0 4)) (= Y_1 1))
))
(assert (<= Y_0 10))
"""
    specs = parse_vnnlib(text)
    assert len(specs) == 2
    first, second = specs
    assert first.lower.tolist() == [0.0, -0.15] and first.upper.tolist() == [1.0, 0.25]
    assert second.lower.tolist() == [2.0, -0.15] and second.upper.tolist() == [3.0, 0.25]
    assert len(first.disjuncts) == 2 and len(second.disjuncts) == 1
    (c1, d1), (c2, d2) = first.disjuncts
    rows = {tuple(row): rhs for row, rhs in zip(c1.tolist(), d1.tolist())}
    assert rows == {(1.0, 2.0, -1.0): 3.0, (1.0, 0.0, 0.0): 10.0}
    rows = {tuple(row): rhs for row, rhs in zip(c2.tolist(), d2.tolist())}
    assert rows == {(-1.0, 1.0, 0.0): -0.5, (1.0, 0.0, 0.0): 10.0}               # Y_0 - Y_1 > 0.5
    ((c3, d3),) = second.disjuncts
    rows = sorted(zip(map(tuple, c3.tolist()), d3.tolist()))
    assert rows == sorted([((-0.25, 0.0, 1.0), 0.0), ((0.0, 1.0, 0.0), 1.0), ((0.0, -1.0, 0.0), -1.0),
                           ((1.0, 0.0, 0.0), 10.0)])
    # the same text from a file: source is the file name
    path = tmp_path / "boxes.vnnlib"
    path.write_text(text)
    assert [s.source for s in parse_vnnlib(path)] == ["boxes.vnnlib (box 0)", "boxes.vnnlib (box 1)"]
    assert [s.source for s in parse_vnnlib(str(path))] == ["boxes.vnnlib (box 0)", "boxes.vnnlib (box 1)"]


HEADER = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"


@pytest.mark.parametrize("body,line,message", [
    (BOX + "(assert (<= X_1 0.5))\n", 6, "undeclared variable X_1"),
    (BOX + "(assert (<= Y_0 Z))\n", 6, "unknown symbol 'Z'"),
    (BOX + "(assert (<= (* Y_0 Y_1) 0))\n", 6, "non-linear term: a product of two variables"),
    (BOX + "(assert (<= (/ 1 Y_1) 0))\n", 6, "non-linear term: division by a variable"),
    ("(assert (>= X_0 0))\n(assert (<= Y_0 Y_1))\n", 1, "input X_0 has no upper bound"),
    ("(assert (<= X_0 1))\n(assert (<= Y_0 Y_1))\n", 1, "input X_0 has no lower bound"),
    ("(assert (>= X_0 0.75))\n(assert (<= X_0 0.25))\n(assert (<= Y_0 Y_1))\n", 5,
     "X_0 has lower bound 0.75 > upper bound 0.25"),
    (BOX + "(assert (=> (<= Y_0 0) (<= Y_1 0)))\n", 6, r"unknown construct \(=> \.\.\.\)"),
    (BOX + "(declare-datatypes () ())\n", 6, r"unknown construct \(declare-datatypes \.\.\.\)"),
    (BOX + "(assert (<= (exp Y_0) 0))\n", 6, r"unknown construct \(exp \.\.\.\)"),
    (BOX + "(assert (<= Y_0\n   Y_1)\n", 6, "unbalanced parentheses: '\\(' opened here is never closed"),
    (BOX + "(assert (<= Y_0 Y_1)))\n", 6, "unbalanced parentheses: '\\)' without a matching '\\('"),
    (BOX + "(assert (<= X_0 Y_1))\n", 6, "mixes inputs and outputs"),
    (BOX + "(assert (<= (+ X_0 X_0 X_0) 1))\n(assert (<= X_0 Y_0))\n", 7, "mixes inputs and outputs"),
    ("(declare-const X_0 Real)\n" + BOX, 4, "declared twice"),
    ("(declare-const X_0 Int)\n", 4, "only Real"),
    ("(declare-const W_0 Real)\n", 4, "names must be X_i"),
    ("(declare-const X_2 Real)\n" + BOX + "(assert (<= Y_0 Y_1))\n", 4, "X_2 is declared but X_1 is not"),
])
def test_errors_name_the_file_and_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = tmp_path / "bad.vnnlib"
    path.write_text(HEADER + body)
    with pytest.raises(SpecificationError, match=rf"^bad\.vnnlib:{line}: .*{message}"):
        parse_vnnlib(path)
    with pytest.raises(SpecificationError, match=rf"^<vnnlib text>:{line}: .*{message}"):
        parse_vnnlib(HEADER + body)


def test_missing_file_and_missing_declarations(tmp_path: Path) -> None:
    with pytest.raises(SpecificationError, match="no such VNN-LIB file"):
        parse_vnnlib(tmp_path / "absent.vnnlib")
    with pytest.raises(SpecificationError, match="declares no Y variables"):
        parse_vnnlib("(declare-const X_0 Real)\n" + BOX)


def test_input_bounds_inside_or_must_cover_every_box() -> None:
    text = HEADER + "(assert (<= X_0 1))\n(assert (or (and (>= X_0 0) (<= Y_0 0)) (and (<= Y_1 0))))\n"
    with pytest.raises(SpecificationError, match=r"^<vnnlib text>:1: input X_0 \(box 1\) has no lower bound"):
        parse_vnnlib(text)


@needs_data
def test_check_instance_refuses_mismatched_sizes() -> None:
    mnist = DATA / "mnistfc" / "prop_1_0.03.vnnlib"
    tiny = DATA / "test" / "test_tiny.onnx"
    specs = parse_vnnlib(mnist)
    with pytest.raises(SpecificationError, match="prop_1_0.03.vnnlib declares 784 inputs but test_tiny.onnx takes 1"):
        check_instance(from_onnx(tiny), specs, tiny, mnist)
    check_instance(from_onnx(DATA / "mnistfc" / "mnist-net_256x2.onnx"), specs, "mnist-net_256x2.onnx", mnist)
    # 5 inputs as the network, but 3 outputs where it gives 5
    sat = DATA / "test" / "test_sat.onnx"
    three = parse_vnnlib("".join(f"(declare-const X_{i} Real)\n" for i in range(5))
                         + "".join(f"(declare-const Y_{j} Real)\n" for j in range(3))
                         + "".join(f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))\n" for i in range(5))
                         + "(assert (<= Y_0 Y_2))\n", source="three.vnnlib")
    with pytest.raises(SpecificationError, match="three.vnnlib declares 3 outputs but test_sat.onnx gives 5"):
        check_instance(from_onnx(sat), three, sat, "three.vnnlib")


def test_local_robustness_and_vnnlib_agree() -> None:
    """The same property written as VNN-LIB and built by local_robustness gives the same specification."""
    x = np.array([0.2, 0.9, 0.5])
    ours = local_robustness(x, label=1, eps=0.15, n_classes=3)
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(3)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(3)) + \
        "".join(f"(assert (>= X_{i} {max(v - 0.15, 0)!r}))\n(assert (<= X_{i} {min(v + 0.15, 1)!r}))\n"
                for i, v in enumerate(x.tolist())) + \
        "(assert (or (and (>= Y_0 Y_1)) (and (>= Y_2 Y_1))))\n"
    (parsed,) = parse_vnnlib(text)
    np.testing.assert_allclose(parsed.lower, ours.lower)
    np.testing.assert_allclose(parsed.upper, ours.upper)
    assert [(c.tolist(), d.tolist()) for c, d in parsed.disjuncts] == \
        [(c.tolist(), d.tolist()) for c, d in ours.disjuncts]
