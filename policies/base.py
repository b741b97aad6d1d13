"""The search-policy interface: what every policy (built-in or plugin) implements.

A policy walks the :class:`~threedb.policies.space.SearchSpace` of an experiment. It proposes
points of the unit cube ``[0, 1]^d`` (one coordinate per free dimension, continuous and discrete
alike); :meth:`SearchSpace.decode` turns each point into control values. Usage by the run
pipeline::

    policy = make_policy(experiment.policy, space, seed=experiment.seed)   # threedb.policies.registry
    while not policy.exhausted:
        batch = policy.propose(free_slots)          # may be [] while a closed-loop policy waits
        if not batch:
            proposal_id, score = <wait for one result>
            policy.observe(proposal_id, score)
            continue
        ... render / evaluate every proposal, then policy.observe(p.id, score) for each ...

Interface decisions:

* **Options.** A policy is created as ``Cls(space, seed=seed, **options)`` where ``options`` are
  the keys of the config's ``policy:`` section other than ``type``. Each class declares its
  options in :attr:`Policy.options` (:class:`Option`); an unknown option or an invalid value raises
  :class:`~threedb.sim.errors.ConfigError` with key path ``policy.<option>`` (with a close-name
  suggestion for a misspelling). Every policy also accepts an optional ``seed`` key in the config
  section: :func:`~threedb.policies.registry.make_policy` passes it as ``seed=`` in place of the
  experiment seed (the original 3DB's ``random_search`` took ``seed``).
* **Proposals.** :class:`Proposal` carries a stable id ``p000000``, ``p000001``, ... in proposal
  order, the unit-cube point and its decoded values.
* **Scores.** ``observe(id, score)``: *higher is better for the model* (1.0 correct, 0.0 wrong;
  pass ``-loss`` for a loss). Open-loop policies (grid, random, sobol, halton) ignore it; the
  adaptive policy seeks low scores (model failures). A NaN score means "no result" (e.g. the render
  failed): the adaptive policy drops that trial from its model.
* **Exhaustion.** ``propose(n)`` returns up to ``n`` new proposals and ``[]`` once the policy is
  exhausted; a closed-loop policy may also return fewer (or ``[]``) while it waits for results,
  so loop on :attr:`Policy.exhausted`, not on an empty list. :meth:`Policy.total` gives the
  number of proposals overall (every built-in policy is finite) for progress and ETA.
* **Resume = deterministic replay** (no ``state()``/``restore()``). Same space + options + seed and
  the same scores for the same proposal ids => the same proposal sequence, regardless of how the
  pipeline chunks ``propose(n)`` calls and of the order results arrive in (the adaptive policy works
  in synchronous batches, see :mod:`threedb.policies.adaptive`). To resume, re-create the policy,
  propose, and for ids already in the log feed back the logged score instead of rendering.
* **Pairs.** The run pipeline creates one policy per (environment, model) pair with the experiment
  seed, so open-loop policies give every pair identical points: a paired comparison, as in 3DB
  (``paired: false`` in the config section makes the registry derive a seed per pair instead).
* **No free dimension.** When the space has zero free dimensions every built-in policy yields
  exactly one proposal (the point ``()``, i.e. the fixed control values): more would be duplicates.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from threedb.controls.params import closest_name
from threedb.policies.space import SearchSpace
from threedb.sim.errors import ConfigError

_REQUIRED: Any = object()


@dataclass(frozen=True)
class Proposal:
    """One point to evaluate: stable ``id`` (``p000042``), unit-cube ``point``, decoded ``values``."""

    id: str
    point: tuple[float, ...]
    values: dict[str, dict[str, Any]]


def proposal_id(index: int) -> str:
    """The id of the ``index``-th proposal of a policy (0-based)."""
    return f"p{index:06d}"


@dataclass(frozen=True)
class Option:
    """A policy option: ``kind`` ``int`` (with ``minimum``) or ``float``; ``default`` or required."""

    name: str
    doc: str
    default: Any = _REQUIRED
    kind: str = "int"
    minimum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def check(self, value: Any) -> Any:
        expected = ("a whole number" if self.kind == "int" else "a number") + (
            f" >= {self.minimum:g}" if self.minimum is not None else "")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and self.kind == "int":
            ok = isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
        if ok:
            ok = math.isfinite(value) and (self.minimum is None or value >= self.minimum)
        if not ok:
            raise ConfigError(f"{self.doc}: must be {expected}, got {value!r}", key=f"policy.{self.name}",
                              value=value, expected=expected)
        return int(value) if self.kind == "int" else float(value)


SEED_OPTION = Option("seed", "policy seed (in place of the experiment seed)", default=None, minimum=0)
"""The ``seed`` key every ``policy:`` section may give; handled by the registry's ``make_policy``."""


class Policy(ABC):
    """Base class of search policies; see the module docstring for the contract."""

    #: Config name (``policy.type``); plugins may leave it empty.
    name: ClassVar[str] = ""
    #: The options this policy accepts (the registry handles the ``seed`` key every policy accepts).
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, space: SearchSpace, *, seed: int, **options: Any) -> None:
        self.space = space
        declared = {o.name: o for o in self.options}
        for key in options:
            if key not in declared:
                accepted = [*declared, SEED_OPTION.name]
                raise ConfigError(f"policy {self.name or type(self).__name__!r} has no option {key!r}"
                                  f"{closest_name(key, accepted)}; it accepts"
                                  f" {', '.join(accepted)}", key=f"policy.{key}", value=options[key])
        self.config: dict[str, Any] = {}
        for opt in declared.values():
            if opt.name in options and not (opt.default is None and options[opt.name] is None):
                self.config[opt.name] = opt.check(options[opt.name])
            elif opt.required:
                raise ConfigError(f"policy {self.name or type(self).__name__!r} needs {opt.name!r} ({opt.doc})",
                                  key=f"policy.{opt.name}", expected=opt.doc)
            else:
                self.config[opt.name] = opt.default
        self.seed: int = int(seed)
        self._issued = 0  # proposals handed out so far

    # -- the interface ---------------------------------------------------------------------------
    @abstractmethod
    def propose(self, n: int) -> list[Proposal]:
        """Up to ``n`` new proposals; ``[]`` when exhausted (or, closed loop, while waiting)."""

    def observe(self, proposal_id: str, score: float) -> None:
        """The result of a proposal (higher = better for the model). Open-loop policies ignore it."""

    def total(self) -> int | None:
        """Number of proposals overall if finite, else None."""
        return None

    @property
    def exhausted(self) -> bool:
        """True once :meth:`propose` will never return anything more."""
        total = self.total()
        return total is not None and self._issued >= total

    @property
    def issued(self) -> int:
        """Number of proposals handed out so far."""
        return self._issued

    # -- helpers for subclasses ------------------------------------------------------------------
    def _make(self, point: Sequence[float]) -> Proposal:
        point = tuple(float(u) for u in point)
        proposal = Proposal(proposal_id(self._issued), point, self.space.decode(point))
        self._issued += 1
        return proposal

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({opts}, seed={self.seed})"


class OpenLoopPolicy(Policy):
    """A policy whose points do not depend on results: subclasses yield them from :meth:`_points`.

    :meth:`total` is the number of points; with zero free dimensions it is 1 (a single ``()``).
    """

    def __init__(self, space: SearchSpace, *, seed: int, **options: Any) -> None:
        super().__init__(space, seed=seed, **options)
        self._iter: Iterator[Sequence[float]] | None = None

    @abstractmethod
    def _count(self) -> int:
        """Number of points for a space with at least one dimension."""

    @abstractmethod
    def _points(self) -> Iterator[Sequence[float]]:
        """The points in order (called once, lazily; only when the space has dimensions)."""

    def total(self) -> int:
        return 1 if self.space.ndim == 0 else self._count()

    def propose(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        if self._iter is None:
            self._iter = iter([()]) if self.space.ndim == 0 else self._points()
        while len(out) < n and self._issued < self.total():
            out.append(self._make(next(self._iter)))
        return out


def chunked(draw: Callable[[int], Any], total: int, chunk: int = 1024) -> Iterator[Sequence[float]]:
    """Yield ``total`` rows from ``draw(k)`` (an array of ``k`` rows), drawing ``chunk`` rows at a time."""
    left = total
    while left > 0:
        k = min(chunk, left)
        yield from draw(k)
        left -= k


def option_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a ``policy:`` config section (every key except ``type``)."""
    return {k: v for k, v in config.items() if k != "type"}


__all__ = ["Proposal", "Option", "Policy", "OpenLoopPolicy", "proposal_id", "chunked", "option_values"]
