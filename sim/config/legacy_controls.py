"""Control entries of original-3DB configs (``module: threedb.controls.blender.<name>``), given the
original's meaning before the control registry reads them.

The original 3DB differed from threedb in three ways a config relies on:

* a parameter left out of an entry was **searched** over the control's default domain (threedb holds
  it at its default), so such a parameter is written out here with the original's domain;
* a plain list of numbers was a **set of choices** (``severity: [1, 2, 3, 4, 5]``), not a range;
  ``"(0.9)"`` (a parenthesised single value) was a number;
* some parameters had other names (``material.replacement_material``, ``occlusion.zoom`` / ``scale``).

The original's default domains are recorded in ``../shared/spec/3db-reference.md`` ("Built-in
controls"); where threedb's declared domain is narrower for no reason of the renderer's, threedb's was
widened (``zoom_factor`` down to 0.2, rotations to +-2 pi). A value beyond threedb's domain is clamped
into it, with a note (the occluder hides at most 80% of the object, the original asked up to 100%).
"""
from __future__ import annotations

import math
import re
from typing import Any

from threedb.controls.registry import LEGACY_ALIASES

#: Prefixes of the original's control modules.
LEGACY_CONTROL_PACKAGES: tuple[str, ...] = ("threedb.controls.blender.", "threedb.controls.preprocessing.")

_PI = math.pi
#: The original's search domain of each parameter (``[lo, hi]`` a range, ``{"choices": [...]}`` a set),
#: under threedb's control and parameter names. ``None``: the parameter's choices as threedb declares them.
ORIGINAL_DOMAINS: dict[str, dict[str, Any]] = {
    "camera": {"view_point_x": [-1.0, 1.0], "view_point_y": [-1.0, 1.0], "view_point_z": [0.0, 1.0],
               "zoom_factor": [0.5, 2.0], "aperture": [1.0, 32.0], "focal_length": [10.0, 400.0]},
    "orientation": {f"rotation_{a}": [-_PI, _PI] for a in "xyz"},
    "position": {f"offset_{a}": [-1.0, 1.0] for a in "xyz"},
    "pin_to_ground": {"z_ground": [0.0, 1.0]},
    "obj_loc_in_frame": {"x_shift": [-1.0, 1.0], "y_shift": [-1.0, 1.0]},
    "scale": {"factor": [0.25, 1.0]},
    "material": {"material": None},
    # 3DB's code: occlusion_ratio (0.1, 1.0) (threedb hides at most 0.8), zoom (0.1, 0.4) -> distance
    "occlusion": {"occlusion_ratio": [0.1, 0.8], "distance": [0.6, 0.9], "occluder_size": [0.25, 1.0],
                  "direction": {"choices": list(range(8))}, "occluder": None},
    "light": {"H": [0.0, 1.0], "S": [0.0, 1.0], "V": [0.0, 1.0], "intensity": [1000.0, 10000.0],
              "distance": [5.0, 20.0], "dir_x": [-1.0, 1.0], "dir_y": [-1.0, 1.0], "dir_z": [0.0, 1.0]},
    "liquid": {"ratio_milk": [0.0, 1.0], "ratio_coffee": [0.0, 1.0]},
    "background": {"H": [0.0, 1.0], "S": [0.0, 1.0], "V": [0.0, 1.0]},
    "corruption": {"corruption_name": {"choices": [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "speckle_noise", "gaussian_blur", "spatter", "saturate", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression"]}, "severity": {"choices": [1, 2, 3, 4, 5]}},
    "denoiser": {},
}

#: The original's parameter names that threedb calls otherwise, with the map of their values.
RENAMED: dict[str, dict[str, tuple[str, Any]]] = {
    "material": {"replacement_material": ("material", None)},
    # 3DB put the occluder at `zoom` of the way from the object to the camera; threedb's `distance` runs
    # from the camera (0) to the object (1)
    "occlusion": {"zoom": ("distance", lambda x: 1.0 - x), "scale": ("occluder_size", None)},
}
#: The original's module names of controls that threedb names otherwise.
MODULE_ALIASES: dict[str, str] = {**LEGACY_ALIASES, "imagenet_c_corruption": "corruption"}

_PAREN_VALUE = re.compile(r"^\s*\(\s*([-+]?[0-9.eE+-]+)\s*\)\s*$")
_PAREN_RANGE = re.compile(r"^\s*\(\s*([^,()]+)\s*,\s*([^,()]+)\s*\)\s*$")


def legacy_control_name(entry: Any) -> str | None:
    """threedb's name of the control an original-3DB entry names, or ``None`` if it is not one."""
    if not isinstance(entry, dict) or not isinstance(entry.get("module"), str):
        return None
    module = entry["module"]
    if not module.startswith(LEGACY_CONTROL_PACKAGES):
        return None
    short = module.rsplit(".", 1)[-1]
    return MODULE_ALIASES.get(short, short)


def _number(text: str) -> Any:
    value = float(text)
    return int(value) if value.is_integer() and not any(c in text for c in ".eE") else value


def _domain(value: Any) -> Any:
    """An original value in threedb's forms: ``[lo, hi]`` a range, ``{choices: [...]}`` a set, else fixed."""
    if isinstance(value, list):   # the original's plain list: a set of choices
        return {"choices": value}
    if isinstance(value, str):
        single, pair = _PAREN_VALUE.match(value), _PAREN_RANGE.match(value)
        try:
            if single:
                return _number(single.group(1))
            if pair:   # "(lo, hi)", also what a !!python/tuple is read as
                return [_number(pair.group(1).strip()), _number(pair.group(2).strip())]
        except ValueError:
            return value
    return value


def _each(domain: Any, fn: Any) -> Any:
    """``fn`` applied to every value of a domain (a range's ends re-ordered)."""
    if isinstance(domain, dict):   # anything but {choices: [...]} is left for the registry to refuse
        choices = domain.get("choices")
        return {**domain, "choices": [fn(v) for v in choices]} if isinstance(choices, list) else domain
    if isinstance(domain, list):
        return sorted(fn(v) for v in domain) if all(isinstance(v, (int, float)) for v in domain) else domain
    return fn(domain)


def _material(value: Any) -> Any:
    """3DB named replacement materials by file (``skin-zebra.blend``) and ``keep_original``."""
    if value == "keep_original":
        return "keep"
    if isinstance(value, str):
        value = value[: -len(".blend")] if value.endswith(".blend") else value
        return value[len("skin-"):] if value.startswith("skin-") else value
    return value


def _clamp(domain: Any, param: Any) -> tuple[Any, bool]:
    """``domain`` within a numeric parameter's declared bounds; whether anything was cut."""
    if param.kind not in ("float", "int") or param.low is None:
        return domain, False

    def cut(v: Any) -> Any:
        return min(max(v, param.low), param.high) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    clamped = _each(domain, cut)
    return clamped, clamped != domain


def map_legacy_control(entry: dict[str, Any], declared: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The entry rewritten with the original's meaning, and notes: the parameters now searched that the
    entry left out (``name domain``) and the values clamped into threedb's domains. ``declared`` maps
    threedb's parameter names of the control to their :class:`~threedb.controls.params.Param`."""
    control = legacy_control_name(entry)
    if control is None:
        return entry, []
    renames = RENAMED.get(control, {})
    lower = {name.lower(): name for name in declared}
    out: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in entry.items():
        if key in ("module", "class", "name", "type", "file"):
            out[key] = value
            continue
        name, convert = renames.get(key, (lower.get(str(key).lower(), key), None))   # 3DB wrote offset_X
        domain = _domain(value)
        if convert is not None:
            domain = _each(domain, convert)
        if control == "material" and name == "material":
            domain = _each(domain, _material)
        param = declared.get(name)
        if param is not None and param.kind == "choice" and param.choices:
            # 3DB's discrete dimensions were indices (the occluder: the i-th file of ood_objects/)
            domain = _each(domain, lambda v: param.choices[v] if isinstance(v, int) and not isinstance(v, bool)
                           and 0 <= v < len(param.choices) and v not in param.choices else v)
        if param is not None:
            domain, cut = _clamp(domain, param)
            if cut:
                notes.append(f"{key} {value!r} clamped to threedb's {param.describe_domain()}")
        out[name] = domain
    out["module"] = f"{LEGACY_CONTROL_PACKAGES[0]}{control}"   # the name the registry knows
    for name, domain in ORIGINAL_DOMAINS.get(control, {}).items():
        if name in out or name not in declared:
            continue
        if domain is None:
            choices = declared[name].choices
            if not choices:
                continue
            domain = {"choices": list(choices)}
        out[name] = domain
        shown = f"[{domain[0]:g}, {domain[1]:g}]" if isinstance(domain, list) else f"{len(domain['choices'])} choices"
        notes.append(f"searched {name} {shown}")
    return out, notes


__all__ = ["LEGACY_CONTROL_PACKAGES", "MODULE_ALIASES", "ORIGINAL_DOMAINS", "RENAMED", "legacy_control_name",
           "map_legacy_control"]
