"""Finding policy classes: built-ins by name, plugins by dotted module path or entry point, and
creating the policy a config's ``policy:`` section asks for.

``policy.type`` is one of

* a built-in name: ``grid``, ``random``, ``sobol``, ``halton``, ``adaptive``, ``smoothing``;
* an installed plugin's name (entry point group ``threedb.policies``);
* ``package.module:Class``, a :class:`~threedb.policies.base.Policy` subclass;
* ``package.module`` alone (what the original 3DB configs give as ``policy.module``): the module's
  ``Policy`` attribute, else its only Policy subclass defined there.

Unknown names raise :class:`~threedb.sim.errors.ConfigError` at ``policy.type`` with a suggestion.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from threedb.controls.params import closest_name
from threedb.policies.base import SEED_OPTION, Policy, option_values
from threedb.policies.space import SearchSpace
from threedb.sim import plugins
from threedb.sim.errors import ConfigError

ENTRY_POINT_GROUP = "threedb.policies"

#: Built-in policies: config name -> "module:Class" (imported lazily).
BUILTIN_POLICIES: dict[str, str] = {
    "grid": "threedb.policies.grid:GridPolicy",
    "random": "threedb.policies.random:RandomPolicy",
    "sobol": "threedb.policies.quasi_random:SobolPolicy",
    "halton": "threedb.policies.quasi_random:HaltonPolicy",
    "adaptive": "threedb.policies.adaptive:AdaptivePolicy",
    "smoothing": "threedb.policies.smoothing:SmoothingPolicy",
}


def available_policies() -> dict[str, str]:
    """Every policy name usable as ``type:`` -> its reference: built-ins and installed plugins."""
    return plugins.available(BUILTIN_POLICIES, ENTRY_POINT_GROUP)


def load_policy_class(kind: str, *, file: str | Path | None = None) -> type[Policy]:
    """The class for ``policy.type`` ``kind``; ConfigError at ``policy.type`` if it cannot be found."""
    known = available_policies()
    if kind in known:
        ref = known[kind]
    elif "." in kind or ":" in kind:
        ref = kind
    else:
        raise ConfigError(f"unknown policy {kind!r}{closest_name(kind, list(known))}; expected one of"
                          f" {', '.join(known)} or a plugin 'package.module:Class'",
                          file=file, key="policy.type", value=kind)
    try:
        return plugins.import_class(ref, Policy)
    except Exception as exc:
        raise ConfigError(f"cannot load policy {kind!r}: {type(exc).__name__}: {exc}",
                          file=file, key="policy.type", value=kind) from exc


def pair_seed(seed: int, pair: str) -> int:
    """The seed of one (environment, object) pair's policy when ``paired: false``: stable across runs
    and resumes (a hash of the experiment seed and the pair's name), different for every pair."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{pair}".encode()).digest()[:4], "little")


def make_policy(config: Mapping[str, Any], space: SearchSpace, *, seed: int,
                file: str | Path | None = None, pair: str | None = None) -> Policy:
    """Create the policy of a ``policy:`` config section (``type`` plus options) over ``space``.

    ``seed`` is the experiment seed; a ``seed`` key in ``config`` takes its place. ``pair`` names the
    (environment, object) pair the policy serves: with ``paired: false`` in ``config`` each pair's
    seed is :func:`pair_seed` of the two, so pairs get different vectors (``paired: true``, the
    default, gives every pair the same ones, for paired comparison).
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("type"), str):
        raise ConfigError("expected a mapping with 'type'", file=file, key="policy", value=config)
    cls = load_policy_class(config["type"], file=file)
    options = option_values(config)
    try:
        if options.get("seed") is not None:  # a policy-level seed replaces the experiment seed
            seed = SEED_OPTION.check(options["seed"])
        options.pop("seed", None)
        paired = options.pop("paired", True)
        if not isinstance(paired, bool):
            raise ConfigError(f"must be true or false, got {paired!r}", key="policy.paired", value=paired,
                              expected="true or false")
        if not paired and pair is not None:
            seed = pair_seed(seed, pair)
        return cls(space, seed=seed, **options)
    except ConfigError as exc:
        if exc.file is None and file is not None:
            raise ConfigError(exc.detail, file=file, key=exc.key, value=exc.value,
                              expected=exc.expected) from None
        raise


__all__ = ["BUILTIN_POLICIES", "ENTRY_POINT_GROUP", "available_policies", "load_policy_class", "make_policy", "pair_seed"]
