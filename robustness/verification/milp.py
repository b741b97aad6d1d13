"""Mixed-integer encoding of a :class:`~.network.Network` in HiGHS (MIPVerify style, Tjeng et al. 2019).

:class:`NetworkModel` writes the network into one ``highspy.Highs`` model layer by layer:

* affine layer: a variable per output, ``z = W v + b`` as equality rows (only non-zero weights);
* ReLU on ``z in [l, u]``: ``u <= 0`` -> the constant 0; ``l >= 0`` -> ``z`` itself; otherwise a
  binary ``a`` and ``y >= z, y <= z - l (1 - a), y <= u a, y >= 0`` with the *asymmetric* bounds
  ``l, u`` (``asymmetric=False``, an ablation, uses ``-M, M`` with ``M = max(-l, u)``);
* max-pool ``y = max x_i``: inputs with ``u_i <= max_j l_j`` dropped; one left -> that input; otherwise
  binaries ``a_i``, ``sum a_i = 1``, ``y >= x_i``, ``y <= x_i + (1 - a_i)(max_{j != i} u_j - l_i)``.

With the binaries relaxed to ``[0, 1]`` the same model is the LP relaxation (each ReLU's triangle),
so one model serves LP and MILP bound tightening (:meth:`NetworkModel.bound`) and the final
question. Every value HiGHS returns is turned into a *valid* bound before use: an LP optimum or a MIP
dual bound, widened by the solver's tolerances; a solve that ends without one yields nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import sparse

from threedb.robustness.verification.bounds import Bounds
from threedb.robustness.verification.network import Affine, MaxPool, Network, ReLU

#: a bound from HiGHS is widened by this much (relative to max(1, |value|)): its feasibility tolerances
SOLVER_MARGIN = 1e-6


def _highspy():
    import highspy

    return highspy


@dataclass
class Units:
    """The values entering one layer: unit ``i`` is HiGHS column ``var[i]``, or the constant ``const[i]``
    when ``var[i] < 0``."""

    var: np.ndarray
    const: np.ndarray


@dataclass
class SolveResult:
    """One HiGHS solve: ``status`` (``optimal``, ``infeasible``, ``time_limit``, ``solution_limit``,
    ``other``), the objective of the best solution (``None`` if none), the proven bound on the optimum
    (``None`` if none), and the best solution's column values."""

    status: str
    objective: Optional[float]
    bound: Optional[float]
    solution: Optional[np.ndarray] = field(default=None, repr=False)
    seconds: float = 0.0


class NetworkModel:
    """A HiGHS model of ``network`` on the box ``bounds[0]`` with the unit bounds ``bounds`` (see module doc)."""

    def __init__(self, network: Network, bounds: Bounds, *, asymmetric: bool = True, threads: int = 1) -> None:
        hs = _highspy()
        self.hs = hs
        self.network, self.bounds, self.asymmetric = network, bounds, asymmetric
        self.h = hs.Highs()
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("threads", int(threads))
        self.h.setOptionValue("mip_rel_gap", 0.0)
        self.h.setOptionValue("mip_abs_gap", 0.0)
        self.n_cols = 0
        self.binaries: list[int] = []
        #: (layer, unit indices, binary columns): the indicators of unstable ReLUs and max-pool inputs
        self._indicators: list[tuple] = []
        self.integer = False
        lo, hi = bounds[0]
        self.units: list[Units] = [Units(self._add_cols(lo, hi), np.zeros(lo.size))]
        self._objective_cols: np.ndarray = np.zeros(0, dtype=np.int32)

    # ------------------------------------------------------------------ building

    @property
    def encoded(self) -> int:
        """Layers written so far (``units[k]`` exists for ``k <= encoded``)."""
        return len(self.units) - 1

    def _add_cols(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        n = int(lower.size)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        self.h.addVars(n, np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64))
        cols = np.arange(self.n_cols, self.n_cols + n)
        self.n_cols += n
        return cols

    def _add_binaries(self, n: int) -> np.ndarray:
        cols = self._add_cols(np.zeros(n), np.ones(n))
        self.binaries.extend(int(c) for c in cols)
        if self.integer and n:
            self.h.changeColsIntegrality(n, cols.astype(np.int32),
                                         np.full(n, self.hs.HighsVarType.kInteger))
        return cols

    def _add_rows(self, lower: np.ndarray, upper: np.ndarray, starts: np.ndarray, index: np.ndarray,
                  value: np.ndarray) -> None:
        if len(lower):
            self.h.addRows(len(lower), np.asarray(lower, np.float64), np.asarray(upper, np.float64), len(index),
                           np.asarray(starts, np.int32), np.asarray(index, np.int32), np.asarray(value, np.float64))

    def encode_until(self, layer: int) -> None:
        """Write layers ``encoded .. layer - 1`` with the current ``bounds``."""
        while self.encoded < layer:
            k = self.encoded
            spec = self.network.layers[k]
            if isinstance(spec, Affine):
                lower, upper = self.bounds[k + 1]
                # units a ReLU after this layer zeroes on the whole box need no column and no row
                # (upper == 0 keeps its column: a domain split inactive has z <= 0 as the column's bound)
                dead = upper < 0 if k + 1 < len(self.network.layers) and isinstance(
                    self.network.layers[k + 1], ReLU) else np.zeros(upper.size, dtype=bool)
                self.units.append(self._affine(spec, self.units[k], lower, upper, dead))
            elif isinstance(spec, ReLU):
                self.units.append(self._relu(self.units[k], *self.bounds[k]))
            else:
                self.units.append(self._maxpool(spec, self.units[k], *self.bounds[k]))

    def _affine(self, layer: Affine, units: Units, lower: np.ndarray, upper: np.ndarray, dead: np.ndarray) -> Units:
        """``z = W v + b`` for the units not ``dead`` (those are left as the constant ``upper``: only a ReLU
        that maps them to 0 reads them)."""
        is_var = units.var >= 0
        live = np.flatnonzero(~dead)
        weight = layer.weight[live]
        bias = layer.bias[live]
        rhs = bias + weight[:, ~is_var] @ units.const[~is_var] if (~is_var).any() else bias.copy()
        cols = self._add_cols(lower[live], upper[live])
        sub = weight[:, is_var]
        rows, nz = np.nonzero(sub)
        n = weight.shape[0]
        # row i: z_i - sum_j W_ij v_j = rhs_i (a column repeated by aliasing sums, as it should)
        matrix = sparse.csr_matrix((np.concatenate([np.ones(n), -sub[rows, nz]]),
                                    (np.concatenate([np.arange(n), rows]),
                                     np.concatenate([cols, units.var[is_var][nz]]))), shape=(n, self.n_cols))
        starts, index, value = matrix.indptr[:-1], matrix.indices, matrix.data
        self._add_rows(rhs, rhs, starts, index, value)
        var = np.full(layer.out_size, -1, dtype=np.int64)
        var[live] = cols
        return Units(var, np.where(dead, upper, 0.0))

    def _relu(self, units: Units, lower: np.ndarray, upper: np.ndarray) -> Units:
        n = lower.size
        var = np.full(n, -1, dtype=np.int64)
        const = np.zeros(n)
        is_const = units.var < 0
        const[is_const] = np.maximum(units.const[is_const], 0.0)
        active = ~is_const & (lower >= 0)
        var[active] = units.var[active]
        unstable = np.flatnonzero(~is_const & (lower < 0) & (upper > 0))
        if unstable.size:
            lo, hi = lower[unstable], upper[unstable]
            if not self.asymmetric:
                big = np.maximum(-lo, hi)
                lo, hi = -big, big
            y = self._add_cols(np.zeros(unstable.size), np.maximum(upper[unstable], 0.0))
            a = self._add_binaries(unstable.size)
            z = units.var[unstable]
            m = unstable.size
            inf = self.hs.kHighsInf
            # y - z >= 0 ; y - z - l a <= -l ; y - u a <= 0
            starts = np.concatenate([np.arange(m) * 2, 2 * m + np.arange(m) * 3, 5 * m + np.arange(m) * 2])
            index = np.concatenate([np.stack([y, z], 1).ravel(), np.stack([y, z, a], 1).ravel(),
                                    np.stack([y, a], 1).ravel()])
            value = np.concatenate([np.tile([1.0, -1.0], m), np.stack([np.ones(m), -np.ones(m), -lo], 1).ravel(),
                                    np.stack([np.ones(m), -hi], 1).ravel()])
            row_lo = np.concatenate([np.zeros(m), np.full(m, -inf), np.full(m, -inf)])
            row_hi = np.concatenate([np.full(m, inf), -lo, np.zeros(m)])
            self._add_rows(row_lo, row_hi, starts, index, value)
            var[unstable] = y
            self._indicators.append(("relu", len(self.units), unstable, a))
        return Units(var, const)

    def _maxpool(self, layer: MaxPool, units: Units, lower: np.ndarray, upper: np.ndarray) -> Units:
        n = layer.out_size
        var = np.full(n, -1, dtype=np.int64)
        const = np.zeros(n)
        inf = self.hs.kHighsInf
        for i, group in enumerate(layer.groups):
            group = np.unique(group)
            lo, hi = lower[group], upper[group]
            keep = group[hi > lo.max()] if (hi > lo.max()).any() else group[[int(lo.argmax())]]
            if keep.size == 1 or np.all(units.var[keep] < 0):
                j = keep[int(np.argmax(lower[keep]))] if keep.size > 1 else keep[0]
                if units.var[keep].max() < 0:
                    const[i] = units.const[keep].max()
                else:
                    var[i], const[i] = units.var[j], units.const[j]
                continue
            (y,) = self._add_cols(np.array([lower[keep].max()]), np.array([upper[keep].max()]))
            a = self._add_binaries(keep.size)
            # sum a = 1
            self._add_rows(np.ones(1), np.ones(1), np.zeros(1), a, np.ones(keep.size))
            for t, j in enumerate(keep):
                others = np.delete(upper[keep], t)
                big = max(float(others.max()) - float(lower[j]), 0.0)
                x_var, x_const = units.var[j], units.const[j]
                if x_var >= 0:
                    # y - x >= 0 ; y - x + big a <= big
                    self._add_rows(np.zeros(1), np.full(1, inf), np.zeros(1), np.array([y, x_var]),
                                   np.array([1.0, -1.0]))
                    self._add_rows(np.full(1, -inf), np.full(1, big), np.zeros(1), np.array([y, x_var, a[t]]),
                                   np.array([1.0, -1.0, big]))
                else:
                    self._add_rows(np.full(1, x_const), np.full(1, inf), np.zeros(1), np.array([y]), np.ones(1))
                    self._add_rows(np.full(1, -inf), np.full(1, big + x_const), np.zeros(1), np.array([y, a[t]]),
                                   np.array([1.0, big]))
            var[i] = y
            self._indicators.append(("max", len(self.units), np.array([i]), a, keep))
        return Units(var, const)

    # ------------------------------------------------------------------ solving

    def set_integer(self, integer: bool) -> None:
        """Binaries integral (MILP) or relaxed to ``[0, 1]`` (LP relaxation)."""
        if integer == self.integer:
            return
        self.integer = integer
        if self.binaries:
            kind = self.hs.HighsVarType.kInteger if integer else self.hs.HighsVarType.kContinuous
            cols = np.asarray(self.binaries, dtype=np.int32)
            self.h.changeColsIntegrality(len(cols), cols, np.full(len(cols), kind))

    def set_input_box(self, lower: np.ndarray, upper: np.ndarray) -> None:
        """Constrain the input columns to ``[lower, upper]`` (inside the box the bounds were computed on)."""
        cols = self.units[0].var.astype(np.int32)
        self.h.changeColsBounds(len(cols), cols, np.asarray(lower, np.float64), np.asarray(upper, np.float64))

    def add_cols(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """New continuous columns (for a caller's objective or constraints)."""
        return self._add_cols(np.asarray(lower, np.float64), np.asarray(upper, np.float64))

    def add_binaries(self, n: int) -> np.ndarray:
        """New binary columns (integral whenever the model is)."""
        return self._add_binaries(n)

    def add_row(self, lower: float, upper: float, cols: Sequence[int], values: Sequence[float]) -> None:
        """One linear row ``lower <= sum values * cols <= upper`` (``±inf`` for none)."""
        inf = self.hs.kHighsInf
        lo = -inf if lower == -np.inf else lower
        hi = inf if upper == np.inf else upper
        self._add_rows(np.array([lo]), np.array([hi]), np.zeros(1), np.asarray(cols), np.asarray(values, float))

    def add_linear_row(self, units: Units, coef: np.ndarray, lower: float, upper: float,
                       extra_cols: Sequence[int] = (), extra_values: Sequence[float] = ()) -> None:
        """``lower <= coef @ units + extras <= upper`` (constant units moved to the bounds)."""
        coef = np.asarray(coef, dtype=np.float64)
        is_var = (units.var >= 0) & (coef != 0)
        shift = float(coef[units.var < 0] @ units.const[units.var < 0])
        cols = np.concatenate([units.var[is_var], np.asarray(extra_cols, dtype=np.int64)])
        values = np.concatenate([coef[is_var], np.asarray(extra_values, dtype=np.float64)])
        self.add_row(lower - shift, upper - shift, cols, values)

    def set_objective(self, cols: Sequence[int], values: Sequence[float], maximize: bool) -> None:
        """Objective ``sum values * cols`` (every other cost zeroed), maximised or minimised."""
        cols = np.asarray(cols, dtype=np.int32)
        if self._objective_cols.size:
            self.h.changeColsCost(len(self._objective_cols), self._objective_cols,
                                  np.zeros(len(self._objective_cols)))
        self.h.changeColsCost(len(cols), cols, np.asarray(values, dtype=np.float64))
        self._objective_cols = cols
        sense = self.hs.ObjSense.kMaximize if maximize else self.hs.ObjSense.kMinimize
        self.h.changeObjectiveSense(sense)

    def solve(self, *, time_limit: float = np.inf, first_solution: bool = False) -> SolveResult:
        """Run HiGHS (LP or MILP as :meth:`set_integer` says); ``first_solution``: stop at the first feasible
        MILP solution. The returned ``bound`` is valid (widened by :data:`SOLVER_MARGIN`) or ``None``."""
        hs, h = self.hs, self.h
        h.setOptionValue("time_limit", float(max(time_limit, 1e-3)) if np.isfinite(time_limit) else hs.kHighsInf)
        h.setOptionValue("mip_max_improving_sols", 1 if first_solution else 2147483647)
        # an LP re-solved for a new objective starts from the last basis (presolve would discard it)
        h.setOptionValue("presolve", "on" if self.integer else "off")
        start = time.perf_counter()
        h.run()
        seconds = time.perf_counter() - start
        status = h.getModelStatus()
        info = h.getInfo()
        maximize = h.getObjectiveSense()[1] == hs.ObjSense.kMaximize
        has_solution = info.primal_solution_status == 2   # kSolutionStatusFeasible
        objective = float(info.objective_function_value) if has_solution else None
        solution = np.asarray(h.getSolution().col_value) if has_solution else None
        name = {hs.HighsModelStatus.kOptimal: "optimal", hs.HighsModelStatus.kInfeasible: "infeasible",
                hs.HighsModelStatus.kTimeLimit: "time_limit",
                hs.HighsModelStatus.kSolutionLimit: "solution_limit"}.get(status, "other")
        bound: Optional[float] = None
        is_mip = self.integer and bool(self.binaries)   # without binaries HiGHS solves an LP (no MIP bound)
        if name == "optimal":
            raw = float(info.mip_dual_bound) if is_mip else objective
            if raw is not None and np.isfinite(raw):
                bound = raw
        elif is_mip and name in ("time_limit", "solution_limit") and np.isfinite(info.mip_dual_bound):
            bound = float(info.mip_dual_bound)
        if bound is not None:
            margin = SOLVER_MARGIN * max(1.0, abs(bound))
            bound = bound + margin if maximize else bound - margin
        return SolveResult(name, objective, bound, solution, seconds)

    def bound_unit(self, k: int, i: int, maximize: bool, *, time_limit: float = np.inf) -> Optional[float]:
        """A valid upper (``maximize``) or lower bound of unit ``i`` entering layer ``k`` over the model
        (LP or MILP), or ``None`` when the solve gave none (time limit without a bound, numerical trouble)."""
        self.encode_until(k)
        unit_var, unit_const = self.units[k].var[i], self.units[k].const[i]
        if unit_var < 0:
            return float(unit_const)
        self.set_objective([unit_var], [1.0], maximize)
        result = self.solve(time_limit=time_limit)
        if result.status == "infeasible":
            return None
        return result.bound

    def point(self, x: np.ndarray) -> np.ndarray:
        """Column values of the encoded layers at the input ``x`` (a feasible MILP point, for a MIP start);
        columns added by callers are left at 0 for them to fill."""
        values = np.zeros(self.n_cols)
        current = np.asarray(x, dtype=np.float64).reshape(-1)
        layer_values = [current]
        for layer in self.network.layers[:self.encoded]:
            current = layer(current)
            layer_values.append(current)
        for k, units in enumerate(self.units):
            is_var = units.var >= 0
            values[units.var[is_var]] = layer_values[k][is_var]
        for entry in self._indicators:
            kind, k, rows, cols = entry[:4]
            if kind == "relu":   # the binaries of the ReLU *after* its input layer k - 1
                values[cols] = (layer_values[k - 1][rows] > 0).astype(float)
            else:
                keep = entry[4]
                values[cols] = 0.0
                values[cols[int(np.argmax(layer_values[k - 1][keep]))]] = 1.0
        return values

    def set_start(self, values: np.ndarray) -> None:
        """A feasible point (all columns) for the MILP to start from: its objective is an incumbent."""
        solution = self.hs.HighsSolution()
        solution.col_value = list(np.asarray(values, dtype=np.float64))
        solution.value_valid = True
        self.h.setSolution(solution)

    def values(self, solution: np.ndarray, k: int) -> np.ndarray:
        """Values of the units entering layer ``k`` in a solution vector."""
        units = self.units[k]
        out = units.const.copy()
        is_var = units.var >= 0
        out[is_var] = solution[units.var[is_var]]
        return out


__all__ = ["NetworkModel", "SOLVER_MARGIN", "SolveResult", "Units"]
