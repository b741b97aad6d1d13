"""Reading configs written for the original 3DB (``threedb-preview`` 0.0.8).

An original-3DB config is recognised by its ``render_args`` section, an ``evaluation.module``,
a policy module of the original (``threedb.policies.grid_search`` / ``random_search``) or a
control module of the original (``threedb.controls.blender.*``). :func:`map_legacy` rewrites it
into this project's schema in place, moving provenance along, and returns notes that say what
was mapped or dropped (kept on the Experiment so a user can see them).

Mapping:

* ``render_args`` -> ``render``: ``resolution`` (an int, square images) and ``samples`` as they
  are; ``with_depth`` / ``with_segmentation`` / ``with_uv`` -> ``passes`` ``depth`` / ``mask`` /
  ``uv`` (a missing flag is false, as in 3DB); ``gpu_id`` -> ``device`` (``-1`` = cpu);
  ``cpu_cores`` -> ``threads``; ``engine``, ``max_depth`` and ``tile_size`` are dropped with a note.
  Values already under ``render`` win over mapped ones.
* ``policy.module``: ``threedb.policies.grid_search`` -> ``type: grid`` (``samples_per_dim``),
  ``threedb.policies.random_search`` -> ``type: random`` (``samples``, ``seed``); another module
  path becomes the ``type`` as it is (a plugin policy module).
* ``controls``: entries keep ``module:``; the control registry maps the original module paths
  (``threedb.controls.blender.camera`` ...) to the built-in controls.
* ``inference`` / ``evaluation`` / ``logging`` are kept as mappings for the run pipeline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from threedb.controls.params import closest_name
from threedb.controls.registry import BUILTIN_CONTROLS, import_control
from threedb.sim.config.legacy_controls import LEGACY_CONTROL_PACKAGES, legacy_control_name, map_legacy_control
from threedb.sim.config.loader import Provenance

#: The original's search policies -> our policy types.
LEGACY_POLICIES: dict[str, str] = {
    "threedb.policies.grid_search": "grid",
    "threedb.policies.random_search": "random",
}


#: The original's loggers -> ours (``json`` is details.log, always written).
LEGACY_LOGGERS: dict[str, str] = {
    "threedb.result_logging.json_logger": "json",
    "threedb.result_logging.image_logger": "images",
    "threedb.result_logging.tb_logger": "tensorboard",
}

#: Keys the original's Blender renderer read from ``render_args``.
LEGACY_RENDER_KEYS: tuple[str, ...] = ("engine", "resolution", "samples", "with_uv", "with_depth",
                                       "with_segmentation", "max_depth", "tile_size", "gpu_id", "cpu_cores")

_PASS_FLAGS: tuple[tuple[str, str], ...] = (("with_depth", "depth"), ("with_segmentation", "mask"),
                                            ("with_uv", "uv"))


def legacy_reasons(data: dict[str, Any]) -> list[str]:
    """Why ``data`` looks like an original-3DB config (empty if it does not)."""
    reasons = []
    if "render_args" in data:
        reasons.append("it has render_args")
    evaluation, policy = data.get("evaluation"), data.get("policy")
    if isinstance(evaluation, dict) and "module" in evaluation:
        reasons.append("evaluation.module")
    if isinstance(policy, dict) and str(policy.get("module", "")).startswith("threedb."):
        reasons.append(f"policy.module {policy['module']}")
    logging = data.get("logging")
    if isinstance(logging, dict) and "logger_modules" in logging:
        reasons.append("logging.logger_modules")
    controls = data.get("controls")
    if isinstance(controls, list):
        for i, entry in enumerate(controls):
            if isinstance(entry, dict) and str(entry.get("module", "")).startswith(LEGACY_CONTROL_PACKAGES):
                reasons.append(f"controls[{i}].module {entry['module']}")
                break
    return reasons


def is_legacy(data: dict[str, Any]) -> bool:
    """Whether ``data`` is an original-3DB config."""
    return bool(legacy_reasons(data))


def normalize_file(raw: dict[str, Any], path: Path) -> list[str]:
    """Map one file's original-3DB sections (``render_args``, ``policy.module``) before it is merged with
    its base or child, so that the two forms merge as the same keys (a child's ``policy: {module:
    ...grid_search}`` then replaces a base's ``policy: {type: random}``; see ``loader.PLUGIN_BLOCKS``)."""
    reasons = [r for r in legacy_reasons(raw) if r.startswith(("it has render_args", "policy.module"))]
    if not reasons:
        return []
    provenance = Provenance()
    for key, value in raw.items():
        provenance.record((key,), value, path)
    notes = []
    if "render_args" in raw:
        notes += _map_render_args(raw, provenance)
    if isinstance(raw.get("policy"), dict) and "module" in raw["policy"]:
        notes += _map_policy(raw, provenance)
    return [f"{path.name}: original 3DB {', '.join(reasons)}"] + notes


def map_legacy(data: dict[str, Any], provenance: Provenance, mapped: list[str] | None = None) -> list[str]:
    """Rewrite an original-3DB config into our schema, in place; return notes on what changed.

    ``mapped`` holds the notes of :func:`normalize_file` for the files already mapped one by one."""
    reasons = legacy_reasons(data) + (["render_args or policy.module in its files"] if mapped else [])
    notes = [f"original 3DB config ({', '.join(reasons)}): mapped to the threedb schema"] + list(mapped or [])
    if "render_args" in data:
        notes += _map_render_args(data, provenance)
    if isinstance(data.get("policy"), dict) and "module" in data["policy"]:
        notes += _map_policy(data, provenance)
    controls = data.get("controls")
    for i, entry in enumerate(controls if isinstance(controls, list) else []):
        name = legacy_control_name(entry)
        if name is None:
            continue
        note = f"controls[{i}]: original control module {entry['module']} -> {name}"
        if name in BUILTIN_CONTROLS:
            declared = {p.name: p for p in import_control(BUILTIN_CONTROLS[name]).params}
            mapped, searched = map_legacy_control(entry, declared)
            source = provenance.source_of(("controls", i))
            controls[i] = mapped
            if source is not None:
                provenance.record(("controls", i), mapped, source)
            note += "".join(f"; {item}" for item in searched)
        notes.append(note)
    if isinstance(data.get("logging"), dict) and "logger_modules" in data["logging"]:
        notes += _map_loggers(data, provenance)
    if "assets" not in data:
        notes.append("assets: 3DB took the data root on the command line; using assets.root: default"
                     " (set assets.root to use your own folder)")
    return notes


def _map_render_args(data: dict[str, Any], prov: Provenance) -> list[str]:
    """``render_args`` -> ``render`` (values already under ``render`` win)."""
    src = ("render_args",)
    args = data.pop("render_args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise prov.error(src, f"must be a mapping, got {args!r}", value=args)
    for key in args:
        if key not in LEGACY_RENDER_KEYS:
            raise prov.error(src + (key,), f"unknown 3DB render argument {key!r}"
                             f"{closest_name(str(key), LEGACY_RENDER_KEYS)}; expected one of"
                             f" {', '.join(LEGACY_RENDER_KEYS)} (or write a `render:` section)")
    existing = data.get("render")
    if existing is not None and not isinstance(existing, dict):
        raise prov.error(("render",), f"must be a mapping, got {existing!r}", value=existing)
    existing = existing or {}

    notes: list[str] = []
    mapped: dict[str, tuple[Any, tuple[str, ...]]] = {}  # render key -> (value, render_args keys it came from)
    for old, new in (("resolution", "resolution"), ("samples", "samples"), ("cpu_cores", "threads")):
        if old in args:
            mapped[new] = (args[old], (old,))
    if "gpu_id" in args:
        gpu = args["gpu_id"]
        if isinstance(gpu, bool) or not isinstance(gpu, int):
            raise prov.error(src + ("gpu_id",), f"must be a whole number (-1 for the CPU), got {gpu!r}", value=gpu)
        mapped["device"] = ("cpu" if gpu < 0 else "gpu", ("gpu_id",))
        if gpu > 0:
            notes.append(f"render_args.gpu_id {gpu}: device index dropped; render workers pick GPUs"
                         " themselves (use CUDA_VISIBLE_DEVICES to choose)")
    flags = tuple(flag for flag, _ in _PASS_FLAGS if flag in args)
    for flag in flags:
        if not isinstance(args[flag], bool):
            raise prov.error(src + (flag,), f"must be true or false, got {args[flag]!r}", value=args[flag])
    if flags:
        mapped["passes"] = ([name for flag, name in _PASS_FLAGS if args.get(flag)], flags)

    render_source = prov.source_of(src)
    render: dict[str, Any] = {}
    for new, (value, olds) in mapped.items():
        origin = "render_args." + "/".join(olds)
        if new in existing:
            notes.append(f"{origin} ignored: render.{new} is also given")
            continue
        render[new] = value
        source = prov.source_of(src + (olds[-1],)) or render_source
        if source is not None:
            prov.record(("render", new), value, source)
        notes.append(f"{origin} {_show(args, olds)} -> render.{new} {value!r}")
    dropped = {
        "engine": "threedb always renders with Blender Cycles",
        "max_depth": "the depth pass is kept in scene units, not divided by max_depth",
        "tile_size": "Blender 3.0+ has no render tiles",
    }
    for key, why in dropped.items():
        if key in args:
            notes.append(f"render_args.{key} {args[key]!r} dropped: {why}")
    prov.forget(src)
    if "render" not in data and render_source is not None:
        prov.touch(("render",), render_source)
    data["render"] = {**render, **existing}
    return notes


def _map_loggers(data: dict[str, Any], prov: Provenance) -> list[str]:
    """``logging.logger_modules`` -> ``logging.loggers`` (the original's three loggers; others refused)."""
    logging = data["logging"]
    modules = logging.pop("logger_modules")
    src = ("logging", "logger_modules")
    if modules is None:
        modules = []
    if not isinstance(modules, list):
        raise prov.error(src, f"must be a list of logger modules, got {modules!r}", value=modules)
    loggers = []
    for i, module in enumerate(modules):
        if not isinstance(module, str) or module not in LEGACY_LOGGERS:
            raise prov.error(src + (i,), f"unknown logger {module!r}{closest_name(str(module), list(LEGACY_LOGGERS))};"
                             f" the original 3DB's loggers are {', '.join(LEGACY_LOGGERS)}", value=module)
        loggers.append(LEGACY_LOGGERS[module])
    if "loggers" in logging:
        return ["logging.logger_modules ignored: logging.loggers is also given"]
    logging["loggers"] = loggers
    source = prov.source_of(src)
    prov.forget(src)
    if source is not None:
        prov.record(("logging", "loggers"), loggers, source)
    return [f"logging.logger_modules -> logging.loggers {loggers}"]


def _show(args: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The original values, e.g. ``256`` or ``(with_uv true, with_depth false)``."""
    if len(keys) == 1:
        return repr(args[keys[0]])
    return "(" + ", ".join(f"{k} {str(args[k]).lower()}" for k in keys) + ")"


def _map_policy(data: dict[str, Any], prov: Provenance) -> list[str]:
    """``policy.module`` -> ``policy.type``."""
    policy = data["policy"]
    module = policy.pop("module")
    if "type" in policy:
        raise prov.error(("policy", "module"), "give either 'type' or the original 3DB's 'module', not both")
    if not isinstance(module, str):
        raise prov.error(("policy", "module"), f"must be a dotted module path, got {module!r}", value=module)
    if module.startswith("threedb.policies.") and module not in LEGACY_POLICIES:
        raise prov.error(("policy", "module"), f"unknown original 3DB policy {module!r}"
                         f"{closest_name(module, list(LEGACY_POLICIES))}; expected one of"
                         f" {', '.join(LEGACY_POLICIES)}", value=module)
    kind = LEGACY_POLICIES.get(module, module)
    notes = []
    if kind == "grid" and "samples" in policy and "samples_per_dim" not in policy:
        # the original's paper configs give grid_search `samples` in a base that children override
        policy["samples_per_dim"] = policy.pop("samples")
        prov.move(("policy", "samples"), ("policy", "samples_per_dim"))
        notes.append(f"policy.samples {policy['samples_per_dim']!r} -> policy.samples_per_dim (grid search)")
    data["policy"] = {"type": kind, **policy}
    prov.move(("policy", "module"), ("policy", "type"))
    if module in LEGACY_POLICIES:
        return [f"policy.module {module} -> policy.type {kind}"] + notes
    return [f"policy.module {module} -> policy.type {module} (a plugin policy module)"]


__all__ = ["LEGACY_POLICIES", "LEGACY_CONTROL_PACKAGES", "LEGACY_RENDER_KEYS", "is_legacy",
           "legacy_reasons", "map_legacy", "normalize_file"]
