"""Randomized-smoothing samples over scene parameters: the policy behind ``threedb certify scene``.

For each base point ``theta0`` (a vector of the search space's free parameters) the policy proposes
``n0`` *selection* then ``n`` *estimation* samples ``theta0 + e``, ``e ~ N(0, diag(sigma^2))``, drawn in
the **normalised** coordinates of the smoothed parameters (the unit interval ``[0, 1]`` a policy
walks, ``u = (value - low) / (high - low)`` over the range the config gives the parameter). Every
other free parameter stays at its base value. ``threedb run`` renders and evaluates every sample
through the normal pipeline; ``threedb certify scene RUN_DIR`` (:mod:`threedb.evaluators.certify.scene`)
counts the predictions and runs Cohen et al.'s CERTIFY statistics. See ``docs/certify_scene.md``.

Options of the ``policy:`` section (``type: smoothing``):

* ``sigma`` (required): the noise standard deviation in normalised units, one positive number for every
  smoothed parameter, or a mapping ``{control.param: sigma}`` (then its keys are the smoothed parameters
  unless ``smooth`` lists them).
* ``smooth``: the smoothed parameters, a list of ``control.param`` keys (control = the instance name,
  i.e. its ``type`` unless the entry has a ``name``). Default: the keys of a ``sigma`` mapping, else
  every continuous free parameter. Each must be a ``[lo, hi]`` range in the config.
* ``n`` (required), ``n0`` (default 16): estimation and selection samples per base point,
  ``1 <= n0 <= n``.
* ``alpha`` (default 0.001): the confidence level ``1 - alpha`` the analysis certifies at (recorded
  here so that ``threedb certify scene`` finds it; ``--alpha`` there overrides it).
* ``base_points``: a list of mappings ``{control.param: value}`` in the parameters' own units (a
  parameter left out sits at the centre of its range, a discrete one at its middle choice);
  or ``{grid: k}``: ``k`` values per smoothed parameter (endpoints included, as ``type: grid``), other
  free parameters at their centre; or ``{random: k}``: ``k`` points uniform over the whole space.
  Default: the centre of the space (one base point).
* ``wrap``: smoothed parameters whose noisy coordinate wraps around (``u mod 1``), for angles whose range
  is a full turn (e.g. ``rotation_z: [-3.14159, 3.14159]``). Every other parameter is **clipped** to its
  range (the search space's decode clamps ``u`` to ``[0, 1]``).

Clip and wrap do not weaken the certificate: the base classifier is ``h(theta) = f(render(T(theta)))``
with ``T`` the clip/wrap map, a function on all of ``R^d``, and Cohen et al.'s theorem holds for any
such ``h`` (the certified ball may reach outside the range; there ``g`` is the smoothed ``h``).

Proposal ids (job ids end with them) say which base point and phase a sample belongs to:
``b0002-sel-000007`` is selection sample 7 of base point 2, ``b0002-est-000123`` estimation sample 123
(:func:`parse_sample_id`). Order: base point by base point, selection first. Seeds: base point ``b``
draws its ``n0 + n`` normal vectors from ``numpy.random.default_rng(derive_seed(seed, "smoothing/b"))``,
so the samples of a base point do not depend on the others, on ``propose`` chunking or on a resume.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from threedb.controls.params import Choices, Range, closest_name
from threedb.policies.base import OpenLoopPolicy, Option, Proposal
from threedb.policies.space import Dimension, SearchSpace
from threedb.sim.errors import ConfigError
from threedb.sim.jobs import derive_seed

PHASES = ("sel", "est")
_SAMPLE_ID = re.compile(r"b(\d{4,})-(sel|est)-(\d{6,})$")


@dataclass(frozen=True)
class _RawOption(Option):
    """An option whose value (a number, list or mapping) the policy checks itself, against the space."""

    def check(self, value: Any) -> Any:
        return copy.deepcopy(value)


def sample_id(base: int, phase: str, index: int) -> str:
    """The proposal id of sample ``index`` of ``phase`` (``sel``/``est``) of base point ``base``."""
    return f"b{base:04d}-{phase}-{index:06d}"


def parse_sample_id(job_id: str) -> tuple[int, str, int] | None:
    """``(base point, phase, index)`` from a job or proposal id ending in a :func:`sample_id`, else None."""
    match = _SAMPLE_ID.search(str(job_id))
    if not match or (match.start() > 0 and job_id[match.start() - 1] != "-"):
        return None
    return int(match.group(1)), match.group(2), int(match.group(3))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class SmoothingPolicy(OpenLoopPolicy):
    """Gaussian samples around base points in normalised parameter space (randomized smoothing)."""

    name = "smoothing"
    options = (
        _RawOption("sigma", "noise std in normalised units: a number or {control.param: number}"),
        Option("n", "estimation samples per base point", minimum=1),
        Option("n0", "selection samples per base point (<= n)", default=16, minimum=1),
        Option("alpha", "1 - alpha is the confidence the analysis certifies at", default=0.001, kind="float"),
        _RawOption("smooth", "the smoothed parameters, a list of control.param keys", default=None),
        _RawOption("base_points", "a list of {control.param: value}, or {grid: k}, or {random: k}", default=None),
        _RawOption("wrap", "smoothed parameters that wrap around their range (full-turn angles)", default=None),
    )

    def __init__(self, space: SearchSpace, *, seed: int, **options: Any) -> None:
        super().__init__(space, seed=seed, **options)
        if space.ndim == 0:
            raise ConfigError("smoothing needs at least one free parameter: give a control parameter a "
                              "[lo, hi] range", key="policy.smooth")
        self.by_key: dict[str, Dimension] = {d.key: d for d in space.dimensions}
        self.index: dict[str, int] = {d.key: i for i, d in enumerate(space.dimensions)}
        n, n0, alpha = self.config["n"], self.config["n0"], self.config["alpha"]
        if n0 > n:
            raise ConfigError(f"n0 ({n0}, selection samples) must not exceed n ({n}, estimation samples)",
                              key="policy.n0", value=n0, expected=f"an integer between 1 and n = {n}")
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"alpha must be in the open interval (0, 1), got {alpha!r}", key="policy.alpha",
                              value=alpha, expected="a number in (0, 1), e.g. 0.001")
        self.smoothed: list[str] = self._smoothed()
        self.sigmas: dict[str, float] = self._sigmas()
        self.wrapped: frozenset[str] = frozenset(self._wrap())
        self.bases: list[tuple[float, ...]] = self._bases()

    # -- option checks ---------------------------------------------------------------------------
    def _check_key(self, key: Any, where: str, *, continuous: bool = True) -> str:
        """``key`` as a free parameter of the space (a continuous range when ``continuous``)."""
        if not isinstance(key, str) or key not in self.by_key:
            fixed = self._fixed_keys()
            if isinstance(key, str) and key in fixed:
                raise ConfigError(f"parameter {key!r} is fixed in the config; give it a [lo, hi] range to vary it",
                                  key=where, value=key, expected="a parameter with a [lo, hi] range")
            known = list(self.by_key)
            raise ConfigError(f"unknown parameter {key!r}{closest_name(str(key), known + fixed)}; the free "
                              f"parameters are {', '.join(known)} (written control.param, control = the "
                              "instance name)", key=where, value=key, expected=", ".join(known))
        if continuous and not isinstance(self.by_key[key].domain, Range):
            raise ConfigError(f"parameter {key!r} is a discrete list of choices; smoothing needs a [lo, hi] range",
                              key=where, value=key, expected="a parameter with a [lo, hi] range")
        return key

    def _fixed_keys(self) -> list[str]:
        return [f"{spec.name}.{p}" for spec in self.space.controls for p, d in spec.domains.items()
                if not isinstance(d, (Range, Choices))]

    def _smoothed(self) -> list[str]:
        smooth, sigma = self.config["smooth"], self.config["sigma"]
        if smooth is None:
            if isinstance(sigma, Mapping):
                if not sigma:
                    raise ConfigError("an empty mapping smooths nothing", key="policy.sigma", value={})
                keys = [self._check_key(k, f"policy.sigma.{k}") for k in sigma]
                return sorted(keys, key=self.index.__getitem__)
            else:
                smooth = [d.key for d in self.space.dimensions if isinstance(d.domain, Range)]
                if not smooth:
                    raise ConfigError("no free parameter is a [lo, hi] range; smoothing needs one",
                                      key="policy.smooth")
        if isinstance(smooth, str):
            smooth = [smooth]
        if not isinstance(smooth, list) or not smooth:
            raise ConfigError("must be a non-empty list of control.param keys", key="policy.smooth", value=smooth,
                              expected=", ".join(self.by_key))
        keys = [self._check_key(k, f"policy.smooth[{i}]") for i, k in enumerate(smooth)]
        if len(set(keys)) != len(keys):
            raise ConfigError("lists a parameter more than once", key="policy.smooth", value=smooth)
        return sorted(keys, key=self.index.__getitem__)  # space order

    def _sigmas(self) -> dict[str, float]:
        sigma = self.config["sigma"]

        def positive(value: Any, where: str) -> float:
            if not _is_number(value) or value <= 0:
                raise ConfigError(f"sigma must be a positive number (the noise std in normalised units, the range "
                                  f"being 1), got {value!r}", key=where, value=value, expected="a number > 0, e.g. 0.05")
            return float(value)

        if isinstance(sigma, Mapping):
            for key in sigma:
                self._check_key(key, f"policy.sigma.{key}")
                if key not in self.smoothed:
                    raise ConfigError(f"parameter {key!r} has a sigma but is not in policy.smooth",
                                      key=f"policy.sigma.{key}", value=key, expected=", ".join(self.smoothed))
            missing = [k for k in self.smoothed if k not in sigma]
            if missing:
                raise ConfigError(f"no sigma for the smoothed parameter(s) {', '.join(missing)}", key="policy.sigma",
                                  value=dict(sigma), expected="a sigma for every smoothed parameter")
            return {k: positive(sigma[k], f"policy.sigma.{k}") for k in self.smoothed}
        return {k: positive(sigma, "policy.sigma") for k in self.smoothed}

    def _wrap(self) -> list[str]:
        wrap = self.config["wrap"]
        if wrap is None:
            return []
        if isinstance(wrap, str):
            wrap = [wrap]
        if not isinstance(wrap, list):
            raise ConfigError("must be a list of smoothed control.param keys", key="policy.wrap", value=wrap)
        for i, key in enumerate(wrap):
            self._check_key(key, f"policy.wrap[{i}]")
            if key not in self.smoothed:
                raise ConfigError(f"{key!r} is not smoothed; only smoothed parameters can wrap",
                                  key=f"policy.wrap[{i}]", value=key, expected=", ".join(self.smoothed))
        return list(wrap)

    def _centre(self) -> list[float]:
        return [0.5 if isinstance(d.domain, Range) else
                (len(d.domain.values) // 2 + 0.5) / len(d.domain.values) for d in self.space.dimensions]

    def _bases(self) -> list[tuple[float, ...]]:
        spec = self.config["base_points"]
        if spec is None:
            return [tuple(self._centre())]
        if isinstance(spec, Mapping):
            if len(spec) != 1 or next(iter(spec)) not in ("grid", "random"):
                raise ConfigError("a mapping here is {grid: k} or {random: k}", key="policy.base_points",
                                  value=dict(spec), expected="a list of {control.param: value}, {grid: k} or {random: k}")
            kind, k = next(iter(spec.items()))
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ConfigError(f"must be a whole number >= 1, got {k!r}", key=f"policy.base_points.{kind}",
                                  value=k, expected="a whole number >= 1")
            if kind == "random":
                rng = np.random.default_rng(derive_seed(self.seed, "smoothing/base_points"))
                return [tuple(float(u) for u in row) for row in rng.random((k, self.space.ndim))]
            axis = (0.5,) if k == 1 else tuple(float(u) for u in np.linspace(0.0, 1.0, k))
            centre = self._centre()
            out = []
            for combo in itertools.product(*(axis for _ in self.smoothed)):
                point = list(centre)
                for key, u in zip(self.smoothed, combo):
                    point[self.index[key]] = u
                out.append(tuple(point))
            return out
        if not isinstance(spec, list) or not spec:
            raise ConfigError("must be a non-empty list of {control.param: value} mappings (or {grid: k}, {random: k})",
                              key="policy.base_points", value=spec)
        return [self._base_point(item, f"policy.base_points[{i}]") for i, item in enumerate(spec)]

    def _base_point(self, item: Any, where: str) -> tuple[float, ...]:
        if not isinstance(item, Mapping):
            raise ConfigError("must be a mapping {control.param: value} in the parameters' own units", key=where,
                              value=item)
        point = self._centre()
        for key, value in item.items():
            dim = self.by_key[self._check_key(key, f"{where}.{key}", continuous=False)]
            if isinstance(dim.domain, Choices):
                if value not in dim.domain.values:
                    raise ConfigError(f"{value!r} is not one of the choices {list(dim.domain.values)}",
                                      key=f"{where}.{key}", value=value)
                point[self.index[key]] = (dim.domain.values.index(value) + 0.5) / len(dim.domain.values)
                continue
            lo, hi = dim.domain.low, dim.domain.high
            if not _is_number(value) or not lo <= value <= hi:
                raise ConfigError(f"must be a number in the range [{lo}, {hi}] the config gives {key}, got {value!r}",
                                  key=f"{where}.{key}", value=value, expected=f"a number in [{lo}, {hi}]")
            point[self.index[key]] = 0.5 if hi == lo else (float(value) - lo) / (hi - lo)
        return tuple(point)

    # -- the samples -------------------------------------------------------------------------------
    @property
    def per_base(self) -> int:
        """Samples per base point: ``n0 + n``."""
        return self.config["n0"] + self.config["n"]

    def base_seed(self, base: int) -> int:
        """The seed of base point ``base``'s noise."""
        return derive_seed(self.seed, f"smoothing/{base}")

    def noise(self, base: int) -> np.ndarray:
        """The ``(n0 + n) x len(smoothed)`` normalised noise of base point ``base`` (rows: selection first)."""
        z = np.random.default_rng(self.base_seed(base)).standard_normal((self.per_base, len(self.smoothed)))
        return z * np.array([self.sigmas[k] for k in self.smoothed])

    def perturb(self, base: int, e: Sequence[float]) -> tuple[float, ...]:
        """Base point ``base`` moved by normalised noise ``e``, wrapped or clipped to ``[0, 1]``."""
        point = list(self.bases[base])
        for key, delta in zip(self.smoothed, e):
            i = self.index[key]
            u = point[i] + float(delta)
            point[i] = u % 1.0 if key in self.wrapped else min(max(u, 0.0), 1.0)
        return tuple(point)

    def _count(self) -> int:
        return len(self.bases) * self.per_base

    def _points(self) -> Iterator[Sequence[float]]:
        for base in range(len(self.bases)):
            for e in self.noise(base):
                yield self.perturb(base, e)

    def _make(self, point: Sequence[float]) -> Proposal:
        base, k = divmod(self._issued, self.per_base)
        n0 = self.config["n0"]
        pid = sample_id(base, "sel", k) if k < n0 else sample_id(base, "est", k - n0)
        point = tuple(float(u) for u in point)
        proposal = Proposal(pid, point, self.space.decode(point))
        self._issued += 1
        return proposal

    def base_values(self, base: int) -> dict[str, dict[str, Any]]:
        """The control values of base point ``base`` (what an unperturbed render would use)."""
        return self.space.decode(self.bases[base])


__all__ = ["PHASES", "SmoothingPolicy", "parse_sample_id", "sample_id"]
