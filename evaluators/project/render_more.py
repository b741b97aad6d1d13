"""The closed loop: after projecting onto render groups, a ``threedb run`` config (``OUT/render_more.yaml``)
that renders more of the heavily weighted groups.

The *heavy groups* are the fewest groups, by decreasing projected mass (each class's weights averaged with
the class's share of the target), whose mass reaches ``render_more.mass`` (at most ``max_groups``). The
config is the source's render config (the exported dataset's ``source_config.yaml``, the run's
``config.resolved.yaml`` of ``source.details``, or ``render_more.base_config``), resolved and written out in
full, with:

* ``assets.environments``: the heavy groups' environments (when grouped by ``environment``);
* ``assets.objects``: the heavy groups' objects (grouped by ``object``), else the objects of the target's
  classes;
* each binned control parameter: its range narrowed to the hull of the heavy groups' bins (per-value
  groups: the heavy values as ``{choices: [...]}``);
* ``policy: {type: random, samples: S, paired: false}`` with ``S = ceil(renders / (objects x environments))``;
* ``seed``: ``render_more.seed``, else the base config's seed + 1 (new renders, not the source's again).

One run renders every object under every chosen environment: the product covers the heavy groups (and may
add combinations that were not heavy); per-class differences between the weights are averaged out.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from threedb.evaluators.jobs.config import JobConfig
from threedb.evaluators.jobs.output import write_atomic
from threedb.evaluators.project.config import ProjectSchema
from threedb.evaluators.project.data import Side
from threedb.evaluators.project.groups import Grouping

FILE = "render_more.yaml"
_KEY = re.compile(r"^(?P<cls>[^.\[\]]+)(?:\[(?P<inst>[^\]]+)\])?\.(?P<param>[^.]+)$")


@dataclass
class RenderBase:
    """The render config the loop starts from."""

    path: Path
    experiment: Any      #: threedb.sim.config.Experiment


def render_base(config: JobConfig[ProjectSchema], source: Side) -> tuple[Optional[RenderBase], Optional[str]]:
    """``(base, None)``, or ``(None, why not)`` when no render_more.yaml is to be written. Loaded before
    any work, so a broken base config fails first."""
    from threedb.sim.config import load_config

    schema = config.schema
    if schema.render_more is None:
        return None, "render_more: null"
    if schema.groups.type != "render":
        return None, f"groups.type is {schema.groups.type} (render_more needs render groups)"
    explicit = schema.render_more.base_config
    path = Path(explicit) if explicit is not None else source.run_config
    if path is None:
        return None, (f"the source {source.dataset.root} records no render config (source_config.yaml); give "
                      "render_more.base_config")
    if explicit is not None and not path.is_file():
        raise config.error("render_more.base_config", f"render config not found: {path}", value=explicit)
    return RenderBase(path, load_config(path)), None


def group_mass(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Projected mass of each group: the class weights averaged with the classes' target shares."""
    total = sum(r["n_target"] for r in rows)
    mass: dict[int, float] = {}
    for r in rows:
        for gid, w in zip(r["groups"], r["weights"]):
            mass[gid] = mass.get(gid, 0.0) + w * r["n_target"] / total
    return mass


def heavy_groups(mass: Mapping[int, float], share: float, max_groups: Optional[int]) -> list[int]:
    """The fewest groups by decreasing mass (ties: lower id) whose mass reaches ``share``."""
    order = sorted(mass, key=lambda g: (-mass[g], g))
    chosen, total = [], 0.0
    for gid in order:
        if total >= share - 1e-12 or (max_groups is not None and len(chosen) >= max_groups):
            break
        chosen.append(gid)
        total += mass[gid]
    return chosen


def _in_order(values: set[Any], base: Any) -> list[Any]:
    """``values`` in the order of the base list (when it is one), the rest sorted after."""
    listed = [v for v in base if v in values] if isinstance(base, (list, tuple)) else []
    return listed + sorted(v for v in values if v not in listed)


def _narrow(entry: dict[str, Any], param: str, domain: Any, parts: list[Any],
            edges: Optional[Sequence[float]]) -> Optional[str]:
    """Narrow ``entry[param]`` to the heavy bins (``{"range": [lo, hi]}``) or values; returns what it did.
    A heavy first (last) bin reaches down (up) to the domain's bound: the source's samples only span part
    of it."""
    from threedb.controls.params import Choices, Range

    ranges = [p["range"] for p in parts if isinstance(p, dict) and "range" in p]
    if ranges:
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        if isinstance(domain, Range):
            if edges is not None and lo <= edges[0]:
                lo = domain.low
            if edges is not None and hi >= edges[-1]:
                hi = domain.high
            lo, hi = max(lo, domain.low), min(hi, domain.high)
            entry[param] = [lo, hi]
            return f"{param} in [{lo:.4g}, {hi:.4g}]"
        if isinstance(domain, Choices):
            kept = [c for c in domain.values if isinstance(c, (int, float)) and lo <= c <= hi]
            if kept:
                entry[param] = {"choices": kept}
                return f"{param} in {kept}"
        return None
    values = [p for p in parts if not isinstance(p, dict)]
    if isinstance(domain, Range):
        entry[param] = {"choices": sorted(values)} if len(values) > 1 else values[0]
    elif isinstance(domain, Choices):
        kept = [c for c in domain.values if c in values]
        if not kept:
            return None
        entry[param] = {"choices": kept} if len(kept) > 1 else kept[0]
    else:
        return None
    return f"{param} in {sorted(values, key=str)}"


def _control_of(experiment: Any, key: str) -> Optional[tuple[int, str, Any]]:
    """``(control index, param, domain)`` of a ``render_args`` key (``Class.param`` or ``Class[name].param``)."""
    match = _KEY.match(key)
    if not match:
        return None
    for i, spec in enumerate(experiment.controls):
        if spec.cls.__name__ == match["cls"] and match["inst"] in (None, spec.name) and match["param"] in spec.domains:
            return i, match["param"], spec.domains[match["param"]]
    return None


def emit(config: JobConfig[ProjectSchema], base: RenderBase, rows: Sequence[Mapping[str, Any]], grouping: Grouping,
         source: Side, target_uids: Sequence[str], out_dir: Path) -> dict[str, Any]:
    """Write ``OUT/render_more.yaml``; returns what the report says about it."""
    spec = config.schema.render_more
    assert spec is not None
    mass = group_mass(rows)
    heavy = heavy_groups(mass, spec.mass, spec.max_groups)
    experiment = base.experiment
    data = copy.deepcopy(experiment.resolved)
    data["seed"] = spec.seed if spec.seed is not None else experiment.seed + 1
    keys = grouping.keys
    parts = {key: [grouping.groups[g].parts[key] for g in heavy] for key in keys}
    changes: list[str] = []
    seen_envs = sorted({m.environment for m in source.meta or [] if m.environment})
    if "environment" in keys:
        stems = {Path(str(v)).stem for v in parts["environment"]}
        data["assets"]["environments"] = _in_order(stems, data["assets"].get("environments"))
    environments = data["assets"]["environments"]
    n_env = len(environments) if isinstance(environments, list) else max(1, len(seen_envs))
    if "object" in keys:
        objects = {str(v) for v in parts["object"]}
    else:
        objects = {str(u) for u in target_uids}
    data["assets"]["objects"] = _in_order(objects, data["assets"].get("objects"))
    for key in keys:
        if key in ("environment", "object"):
            continue
        found = _control_of(experiment, key)
        if found is None:
            changes.append(f"{key}: not a control parameter of the base config; left as is")
            continue
        index, param, domain = found
        done = _narrow(data["controls"][index], param, domain, parts[key], grouping.bins.get(key, {}).get("edges"))
        changes.append(f"{key}: " + (done or "left as is (a fixed value)"))
    samples = math.ceil(spec.renders / (len(data["assets"]["objects"]) * n_env))
    data["policy"] = {"type": "random", "samples": samples, "paired": False}
    renders = samples * len(data["assets"]["objects"]) * n_env
    heavy_rows = [{"group": g, "name": grouping.name(g), "mass": mass[g]} for g in heavy]
    header = [
        "# threedb project: render more of the heavily weighted render groups (docs/projection.md).",
        f"# From {base.path}, with the heavy groups of the projection of {config.schema.target.root}",
        f"# onto {source.dataset.root} grouped by {', '.join(keys)}: together {sum(mass[g] for g in heavy):.3f} "
        f"of the projected mass (render_more.mass {spec.mass}).",
        *(f"#   {r['mass']:.3f}  {r['name']}" for r in heavy_rows),
        f"# {len(data['assets']['objects'])} objects x {n_env} environments x {samples} samples = {renders} renders.",
        "#   threedb run render_more.yaml --out RUN_DIR; threedb dataset export RUN_DIR --out DATA",
    ]
    path = out_dir / FILE
    write_atomic(path, "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return {"file": FILE, "base_config": str(base.path), "heavy_groups": heavy_rows, "mass": spec.mass,
            "objects": data["assets"]["objects"], "environments": environments, "samples_per_pair": samples,
            "renders": renders, "controls": changes, "seed": data["seed"]}


__all__ = ["FILE", "RenderBase", "emit", "group_mass", "heavy_groups", "render_base"]
