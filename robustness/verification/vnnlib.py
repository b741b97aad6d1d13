"""Read VNN-LIB property files (the VNN-COMP subset) into :class:`~.spec.Specification` objects.

Supported (an SMT-LIB 2 subset):

* ``(declare-const X_i Real)`` inputs and ``(declare-const Y_j Real)`` outputs (``declare-fun`` with
  no arguments as well), numbered ``0 .. n-1``: ``X_i`` is the ``i``-th value of the network's input
  flattened in C order, ``Y_j`` its ``j``-th output;
* ``(assert F)`` where ``F`` is a comparison ``(<= a b)``, ``(>= a b)``, ``(< a b)``, ``(> a b)``,
  ``(= a b)`` (chains ``(<= a b c)`` too) of linear terms -- numbers, variables, ``(+ ...)``,
  ``(- ...)``, ``(* const var)``, ``(/ term const)`` -- or an ``(and ...)`` / ``(or ...)`` of such;
* ``;`` comments; ``set-logic``, ``check-sat``, ``get-model`` and ``exit`` are ignored.

All asserts together form a conjunction; it is expanded into disjunctive normal form. In every
conjunct the input constraints must be bounds on single inputs (a box) and the output constraints
mention outputs only; the conjuncts are grouped by box, giving one :class:`~.spec.Specification`
per box whose disjuncts are the output conjunctions (``C y <= d``). As in VNN-COMP, the file
describes a *counterexample*: ``sat`` means the property is violated.

**Strict inequalities** ``<`` and ``>`` are read as ``<=`` and ``>=``. The set of counterexamples only
grows by its boundary, so an ``unsat`` answer stays sound; a ``sat`` point may lie on the boundary.

Errors are :class:`~.spec.SpecificationError` naming the file and line.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from threedb.robustness.verification.spec import Specification, SpecificationError

#: files larger than this are refused (VNN-COMP's largest CIFAR properties are a few MB)
MAX_BYTES = 256 << 20
#: the DNF of the asserts may hold at most this many conjuncts
MAX_CONJUNCTS = 100_000

_TOKEN = re.compile(r"[()\n]|[^\s();]+")
_COMMENT = re.compile(r";[^\n]*")
_VARIABLE = re.compile(r"([XY])_(0|[1-9][0-9]*)$")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")
_IGNORED = {"set-logic", "check-sat", "get-model", "exit", "set-info", "set-option"}


class _List(list):
    """A parenthesised form: its items (strings for atoms, :class:`_List` for forms) and its first line."""

    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line


class _Reader:
    """Tokenizer and s-expression reader (no evaluation of any kind)."""

    def __init__(self, text: str, source: str) -> None:
        self.text, self.source = text, source

    def error(self, line: int, message: str) -> SpecificationError:
        return SpecificationError(f"{self.source}:{line}: {message}")

    def forms(self) -> list[_List]:
        stack: list[_List] = []
        top: list[_List] = []
        line = 1
        for token in _TOKEN.findall(_COMMENT.sub("", self.text)):
            if token == "(":
                stack.append(_List(line))
            elif token == ")":
                if not stack:
                    raise self.error(line, "unbalanced parentheses: ')' without a matching '('")
                done = stack.pop()
                (stack[-1] if stack else top).append(done)
            elif token == "\n":
                line += 1
            elif stack:
                stack[-1].append(token)
            else:
                raise self.error(line, f"{token!r} outside any (...) form")
        if stack:
            raise self.error(stack[-1].line, "unbalanced parentheses: '(' opened here is never closed")
        return top


@dataclass
class _Linear:
    """``sum coeffs[v] * v + const``; variables are ``("X", i)`` or ``("Y", j)``."""

    coeffs: dict
    const: float = 0.0

    def scaled(self, factor: float) -> "_Linear":
        return _Linear({v: c * factor for v, c in self.coeffs.items()}, self.const * factor)

    def plus(self, other: "_Linear") -> "_Linear":
        coeffs = dict(self.coeffs)
        for v, c in other.coeffs.items():
            coeffs[v] = coeffs.get(v, 0.0) + c
        return _Linear(coeffs, self.const + other.const)


@dataclass
class _Conjunct:
    """Input bounds ``(index, is_upper, value, line)`` and output rows ``(coeffs, rhs, line)``."""

    bounds: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    def merged(self, other: "_Conjunct") -> "_Conjunct":
        return _Conjunct(self.bounds + other.bounds, self.rows + other.rows)


class _Parser:
    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self.declared: dict[tuple[str, int], int] = {}   # variable -> line of its declaration

    def error(self, line: int, message: str) -> SpecificationError:
        return self.reader.error(line, message)

    # ----------------------------------------------------------------- terms
    def atom(self, text: str, line: int) -> Union[float, tuple[str, int]]:
        """A number, or a declared variable as ``("X", i)`` / ``("Y", j)`` (``line``: the enclosing form's)."""
        if _NUMBER.match(text):
            return float(text)
        match = _VARIABLE.match(text)
        if match:
            key = (match.group(1), int(match.group(2)))
            if key not in self.declared:
                raise self.error(line, f"undeclared variable {text}")
            return key
        raise self.error(line, f"unknown symbol {text!r} (expected a number or a declared X_i / Y_j)")

    def term(self, node, line: int) -> _Linear:
        if isinstance(node, str):
            value = self.atom(node, line)
            return _Linear({}, value) if isinstance(value, float) else _Linear({value: 1.0})
        head, args = self.head(node)
        if not args:
            raise self.error(node.line, f"({head}) without arguments")
        parts = [self.term(arg, node.line) for arg in args]
        if head == "+":
            total = parts[0]
            for part in parts[1:]:
                total = total.plus(part)
            return total
        if head == "-":
            if len(parts) == 1:
                return parts[0].scaled(-1.0)
            total = parts[0]
            for part in parts[1:]:
                total = total.plus(part.scaled(-1.0))
            return total
        if head == "*":
            total = parts[0]
            for part in parts[1:]:
                if total.coeffs and part.coeffs:
                    raise self.error(node.line, "non-linear term: a product of two variables")
                total = total.scaled(part.const) if not part.coeffs else part.scaled(total.const)
            return total
        if head == "/":
            total = parts[0]
            for part in parts[1:]:
                if part.coeffs:
                    raise self.error(node.line, "non-linear term: division by a variable")
                if part.const == 0:
                    raise self.error(node.line, "division by zero")
                total = total.scaled(1.0 / part.const)
            return total
        raise self.error(node.line, f"unknown construct ({head} ...) in a term (supported: + - * /)")

    def head(self, node: _List) -> tuple[str, list]:
        if not node or not isinstance(node[0], str):
            raise self.error(node.line, "unknown construct: a form must start with an operator")
        return node[0], node[1:]

    # ----------------------------------------------------------------- formulas
    def formula(self, node, line: int) -> list[_Conjunct]:
        """The disjunctive normal form of a formula: a list of conjuncts."""
        if isinstance(node, str):
            raise self.error(line, f"unknown construct {node!r} where a comparison was expected")
        head, args = self.head(node)
        if head in ("<=", ">=", "<", ">", "="):
            if len(args) < 2:
                raise self.error(node.line, f"({head} ...) needs two terms")
            if len(args) == 2 and head != "=" and isinstance(args[0], str) and isinstance(args[1], str):
                fast = self.bound(head, args[0], args[1], node.line)    # most lines: (<= X_3 0.25)
                if fast is not None:
                    return [fast]
            terms = [self.term(arg, node.line) for arg in args]
            conjunct = _Conjunct()
            for a, b in zip(terms, terms[1:]):
                if head in ("<=", "<", "="):
                    self.constraint(a.plus(b.scaled(-1.0)), node.line, conjunct)    # a - b <= 0
                if head in (">=", ">", "="):
                    self.constraint(b.plus(a.scaled(-1.0)), node.line, conjunct)    # b - a <= 0
            return [conjunct]
        if head == "and":
            result = [_Conjunct()]
            for arg in args:
                alternatives = self.formula(arg, node.line)
                if len(result) * len(alternatives) > MAX_CONJUNCTS:
                    raise self.error(node.line, f"the formula expands to more than {MAX_CONJUNCTS} cases")
                result = [r.merged(a) for r in result for a in alternatives]
            return result
        if head == "or":
            if not args:
                raise self.error(node.line, "(or) without arguments")
            result = [c for arg in args for c in self.formula(arg, node.line)]
            if len(result) > MAX_CONJUNCTS:
                raise self.error(node.line, f"the formula expands to more than {MAX_CONJUNCTS} cases")
            return result
        raise self.error(node.line, f"unknown construct ({head} ...) (supported: <=, >=, <, >, =, and, or)")

    def bound(self, op: str, left: str, right: str, line: int) -> Optional[_Conjunct]:
        """``(op X_i c)`` or ``(op c X_i)`` as a bound without building terms; ``None`` for anything else."""
        a, b = self.atom(left, line), self.atom(right, line)
        if isinstance(a, tuple) and a[0] == "X" and isinstance(b, float):
            upper = op in ("<=", "<")                   # X <= c
        elif isinstance(b, tuple) and b[0] == "X" and isinstance(a, float):
            a, b, upper = b, a, op in (">=", ">")       # c >= X
        else:
            return None
        return _Conjunct([(a[1], upper, b + 0.0, line)], [])

    def constraint(self, expr: _Linear, line: int, conjunct: _Conjunct) -> None:
        """Add ``expr <= 0`` to ``conjunct``: a bound on one input, or a row on the outputs."""
        coeffs = {v: c for v, c in expr.coeffs.items() if c != 0.0}
        kinds = {kind for kind, _ in coeffs}
        if kinds == {"X", "Y"}:
            raise self.error(line, "a constraint mixes inputs and outputs (not supported)")
        if kinds == {"X"}:
            if len(coeffs) != 1:
                raise self.error(line, "an input constraint must bound a single input (only boxes are "
                                       "supported)")
            ((_, index), c), = coeffs.items()
            # c x + const <= 0  ->  x <= -const / c (c > 0) or x >= -const / c (c < 0)
            conjunct.bounds.append((index, c > 0, -expr.const / c + 0.0, line))   # + 0.0: no -0.0 box
        elif kinds == {"Y"}:
            conjunct.rows.append((coeffs, -expr.const, line))
        elif expr.const > 0:        # constant comparison that is false: this case cannot happen
            conjunct.rows.append(({}, -1.0, line))

    # ----------------------------------------------------------------- commands
    def declare(self, node: _List, head: str, args: list) -> None:
        if head == "declare-fun":
            if len(args) != 3 or not isinstance(args[1], _List) or args[1]:
                raise self.error(node.line, "declare-fun must be (declare-fun NAME () Real)")
            args = [args[0], args[2]]
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise self.error(node.line, "declare-const must be (declare-const NAME Real)")
        name, sort = args

        if sort != "Real":
            raise self.error(node.line, f"{name} has sort {sort}; only Real is supported")
        match = _VARIABLE.match(name)
        if not match:
            raise self.error(node.line, f"variable {name!r}: names must be X_i (inputs) or Y_j (outputs)")
        key = (match.group(1), int(match.group(2)))
        if key in self.declared:
            raise self.error(node.line, f"{name} is declared twice (first on line {self.declared[key]})")
        self.declared[key] = node.line

    def count(self, kind: str) -> int:
        indices = sorted(i for k, i in self.declared if k == kind)
        if not indices:
            raise SpecificationError(f"{self.reader.source}: declares no {kind} variables")
        for expected, index in enumerate(indices):
            if index != expected:
                line = self.declared[(kind, index)]
                raise self.error(line, f"{kind}_{index} is declared but {kind}_{expected} is not (variables "
                                       "must be numbered 0 .. n-1)")
        return len(indices)

    def parse(self) -> list[Specification]:
        forms = self.reader.forms()
        asserts = []
        for node in forms:
            head, args = self.head(node)
            if head in ("declare-const", "declare-fun"):
                self.declare(node, head, args)
            elif head == "assert":
                if len(args) != 1:
                    raise self.error(node.line, "assert takes one formula")
                asserts.append((args[0], node.line))
            elif head not in _IGNORED:
                raise self.error(node.line, f"unknown construct ({head} ...) (supported: declare-const, assert)")
        n_in, n_out = self.count("X"), self.count("Y")

        common = _Conjunct()                # asserts with one case apply to every box
        choices: list[list[_Conjunct]] = []
        for node, line in asserts:
            cases = self.formula(node, line)
            if len(cases) == 1:
                common.bounds.extend(cases[0].bounds)
                common.rows.extend(cases[0].rows)
            else:
                choices.append(cases)
        if int(np.prod([len(c) for c in choices], dtype=np.float64)) > MAX_CONJUNCTS:
            raise SpecificationError(f"{self.reader.source}: the asserts expand to more than {MAX_CONJUNCTS} "
                                     "cases")

        lo0, hi0, lo_line0, hi_line0 = self.box(common.bounds, n_in)
        boxes: dict[bytes, tuple] = {}
        for combination in itertools.product(*choices):
            case = _Conjunct()
            for part in combination:
                case = case.merged(part)
            lo, hi, lo_line, hi_line = self.box(case.bounds, n_in, (lo0, hi0, lo_line0, hi_line0))
            key = lo.tobytes() + hi.tobytes()
            if key not in boxes:
                boxes[key] = (lo, hi, lo_line, hi_line, [])
            c = np.zeros((len(common.rows) + len(case.rows), n_out))
            d = np.zeros(len(common.rows) + len(case.rows))
            for r, (coeffs, rhs, _) in enumerate(common.rows + case.rows):
                for (_, j), value in coeffs.items():
                    c[r, j] += value
                d[r] = rhs + 0.0     # no -0.0
            boxes[key][4].append((c, d))

        specs = []
        for k, (lo, hi, lo_line, hi_line, disjuncts) in enumerate(boxes.values()):
            where = "" if len(boxes) == 1 else f" (box {k})"
            unbounded = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
            if unbounded.size:
                i = int(unbounded[0])
                side = "lower" if not np.isfinite(lo[i]) else "upper"
                raise self.error(self.declared[("X", i)], f"input X_{i}{where} has no {side} bound (a box needs "
                                                          f"both; {unbounded.size} such inputs)")
            inverted = np.flatnonzero(lo > hi)
            if inverted.size:
                i = int(inverted[0])
                raise self.error(int(max(lo_line[i], hi_line[i])),
                                 f"input X_{i}{where} has lower bound {lo[i]:g} > upper bound {hi[i]:g}")
            specs.append(Specification(lo, hi, disjuncts, source=self.reader.source + where))
        return specs

    @staticmethod
    def box(bounds: list, n: int, start: Optional[tuple] = None) -> tuple:
        if start is None:
            lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
            lo_line, hi_line = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        else:
            lo, hi, lo_line, hi_line = (a.copy() for a in start)
        for index, upper, value, line in bounds:
            if upper:
                if value < hi[index]:
                    hi[index], hi_line[index] = value, line
            elif value > lo[index]:
                lo[index], lo_line[index] = value, line
        return lo, hi, lo_line, hi_line


def parse_vnnlib(path_or_text: Union[str, Path], *, source: Optional[str] = None,
                 max_bytes: int = MAX_BYTES) -> list[Specification]:
    """The specifications (one per input box) of a VNN-LIB file, or of VNN-LIB text.

    ``path_or_text`` is a :class:`~pathlib.Path`, a path string, or the text itself (a string holding
    a ``(`` that is not the name of an existing file). ``source`` names it in messages (default: the
    file name, or ``<vnnlib text>``).
    """
    if isinstance(path_or_text, Path) or "(" not in path_or_text or (
            "\n" not in path_or_text and len(path_or_text) < 4096 and Path(path_or_text).is_file()):
        path = Path(path_or_text)
        source = source or path.name
        if not path.is_file():
            raise SpecificationError(f"{path}: no such VNN-LIB file")
        size = path.stat().st_size
        if size > max_bytes:
            raise SpecificationError(f"{path}: {size} bytes is more than the {max_bytes} allowed for a VNN-LIB file")
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            raise SpecificationError(f"{path}: cannot be read as text: {exc}") from None
    else:
        text, source = path_or_text, source or "<vnnlib text>"
    return _Parser(_Reader(text, source)).parse()


def check_instance(network, specs: Sequence[Specification], network_file: Union[str, Path, None] = None,
                   spec_file: Union[str, Path, None] = None) -> None:
    """Refuse specifications whose input or output sizes differ from ``network``'s (a
    :class:`~.network.Network`), e.g. "prop_1.vnnlib declares 784 inputs but mnist-net.onnx takes 100"."""
    net_name = Path(network_file).name if network_file else getattr(network, "source", "the network")
    if not specs:
        raise SpecificationError(f"{Path(spec_file).name if spec_file else 'the specification'}: no specification")
    for spec in specs:
        spec_name = Path(spec_file).name if spec_file else spec.source
        if spec.n_inputs != network.in_size:
            raise SpecificationError(f"{spec_name} declares {spec.n_inputs} inputs but {net_name} takes "
                                     f"{network.in_size}")
        if spec.n_outputs != network.out_size:
            raise SpecificationError(f"{spec_name} declares {spec.n_outputs} outputs but {net_name} gives "
                                     f"{network.out_size}")


__all__ = ["MAX_BYTES", "check_instance", "parse_vnnlib"]
