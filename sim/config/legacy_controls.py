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
widened (``zoom_factor`` down to 0.2, rotations to +-2 pi, the occluder's size and distance down to 0.01).
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
    "occlusion": {"occlusion_ratio": [0.01, 0.8], "distance": [0.01, 0.4], "occluder_size": [0.01, 1.0],
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

#: The original's parameter names that threedb calls otherwise.
RENAMED: dict[str, dict[str, str]] = {
    "material": {"replacement_material": "material"},
    "occlusion": {"zoom": "distance", "scale": "occluder_size"},
}

_PAREN_VALUE = re.compile(r"^\s*\(\s*([-+]?[0-9.eE+-]+)\s*\)\s*$")


def legacy_control_name(entry: Any) -> str | None:
    """threedb's name of the control an original-3DB entry names, or ``None`` if it is not one."""
    if not isinstance(entry, dict) or not isinstance(entry.get("module"), str):
        return None
    module = entry["module"]
    if not module.startswith(LEGACY_CONTROL_PACKAGES):
        return None
    short = module.rsplit(".", 1)[-1]
    return LEGACY_ALIASES.get(short, short)


def _material_value(value: Any) -> Any:
    """3DB named replacement materials by file (``zebra.blend``) and ``keep_original``."""
    if value == "keep_original":
        return "keep"
    if isinstance(value, str) and value.endswith(".blend"):
        return value[: -len(".blend")]
    return value


def _value(control: str, param: str, value: Any) -> Any:
    if isinstance(value, str):
        match = _PAREN_VALUE.match(value)
        if match:
            number = float(match.group(1))
            return int(number) if number.is_integer() and "." not in match.group(1) else number
    if control == "material" and param == "material":
        return [_material_value(v) for v in value] if isinstance(value, list) else _material_value(value)
    if isinstance(value, list):   # the original's plain list: a set of choices
        return {"choices": value}
    return value


def map_legacy_control(entry: dict[str, Any], declared: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The entry rewritten with the original's meaning, and the parameters now searched that the entry
    left out (``name domain`` strings, for the run's notes). ``declared`` maps threedb's parameter names of
    the control to their :class:`~threedb.controls.params.Param`."""
    control = legacy_control_name(entry)
    if control is None:
        return entry, []
    renames = RENAMED.get(control, {})
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ("module", "class", "name", "type", "file"):
            out[key] = value
            continue
        name = renames.get(key, key)
        out[name] = _value(control, name, value)
    searched = []
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
        searched.append(f"{name} {shown}")
    return out, searched


__all__ = ["LEGACY_CONTROL_PACKAGES", "ORIGINAL_DOMAINS", "RENAMED", "legacy_control_name", "map_legacy_control"]
