"""Finding control classes: built-ins by name, plugins by module path, file path or entry point,
and turning a config's control entry into a validated :class:`ControlSpec`."""
from __future__ import annotations

import re

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from threedb.controls.base import Control
from threedb.controls.params import Domain, Fixed, closest_name, parse_domain
from threedb.sim import plugins
from threedb.sim.errors import ConfigError

ENTRY_POINT_GROUP = "threedb.controls"

#: Built-in controls: config name -> "module:Class". Imported lazily (scene controls need bpy only when applied).
BUILTIN_CONTROLS: dict[str, str] = {
    "orientation": "threedb.controls.scene.orientation:OrientationControl",
    "camera": "threedb.controls.scene.camera:CameraControl",
    "position": "threedb.controls.scene.position:PositionControl",
    "pin_to_ground": "threedb.controls.scene.pin_to_ground:PinToGroundControl",
    "obj_loc_in_frame": "threedb.controls.scene.obj_loc_in_frame:ObjLocInFrameControl",
    "scale": "threedb.controls.scene.scale:ScaleControl",
    "light": "threedb.controls.scene.light:LightControl",
    "environment": "threedb.controls.scene.environment:EnvironmentControl",
    "background": "threedb.controls.scene.background:BackgroundControl",
    "denoiser": "threedb.controls.scene.denoiser:DenoiserControl",
    "material": "threedb.controls.scene.material:MaterialControl",
    "occlusion": "threedb.controls.scene.occlusion:OcclusionControl",
    "liquid": "threedb.controls.scene.liquid:LiquidControl",
    "corruption": "threedb.controls.image.corruption:CorruptionControl",
    "depth_fog": "threedb.controls.image.depth:DepthFogControl",
    "depth_defocus": "threedb.controls.image.depth:DepthDefocusControl",
}

#: Names the original 3DB used for the same controls (last component of its module path).
LEGACY_ALIASES: dict[str, str] = {
    "pointlight": "light",
    "imagenet_c": "corruption",
    "mug_liquid": "liquid",
}

#: Keys of a control entry that are not parameters.
RESERVED_KEYS = ("type", "module", "file", "class", "name")
#: An instance name: it prefixes the control's columns (``render_args.<name>.<param>``).
CONTROL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ControlSpec:
    """A control entry of a config, resolved and validated."""

    name: str                      #: unique instance name within the experiment
    ref: str                       #: where the class came from ("module:Class" or "file.py:Class")
    cls: type[Control]
    domains: Mapping[str, Domain]  #: a domain for every declared parameter (defaults as Fixed)

    @property
    def kind(self) -> str:
        return self.cls.name


def available_controls() -> dict[str, str]:
    """Every control name usable as ``type:`` -> its reference: built-ins and installed plugins."""
    return plugins.available(BUILTIN_CONTROLS, ENTRY_POINT_GROUP)


def import_control(ref: str) -> type[Control]:
    """Import a control from the ``ref`` a :class:`ControlSpec` carries (render workers use this)."""
    return plugins.import_class(ref, Control)


def load_control_class(entry: Mapping[str, Any], base_dir: Path) -> tuple[type[Control], str]:
    """Import the class an entry names (``type``, ``module`` or ``file``); raise ImportError/LookupError."""
    attr = entry.get("class")
    if "file" in entry:
        path = (base_dir / str(entry["file"])).resolve()
        if not path.is_file():
            raise LookupError(f"control file {path} does not exist")
        ref = f"{path}:{attr or ''}"
        return import_control(ref), ref
    if "module" in entry:
        module = str(entry["module"])
        short = module.rsplit(".", 1)[-1]
        if module.startswith("threedb.controls.") and not module.startswith("threedb.controls.scene."):
            # The original 3DB's module paths (threedb.controls.blender.camera, ...) map to our built-ins.
            short = LEGACY_ALIASES.get(short, short)
            if short in BUILTIN_CONTROLS:
                return import_control(BUILTIN_CONTROLS[short]), BUILTIN_CONTROLS[short]
        ref = f"{module}:{attr}" if attr else module
        return import_control(ref), ref
    name = str(entry.get("type"))
    name = LEGACY_ALIASES.get(name, name)
    known = available_controls()
    if name not in known:
        raise LookupError(f"unknown control {name!r}{closest_name(name, list(known))};"
                          " `threedb controls` lists the available ones")
    return import_control(known[name]), known[name]


def resolve_control(entry: Any, *, key: str, file: str | Path | None, base_dir: Path) -> ControlSpec:
    """Validate one ``controls[i]`` entry of a config and resolve it to a :class:`ControlSpec`.

    ``key`` is the entry's key path (e.g. ``controls[2]``), used in error messages.
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(f"expected a mapping with 'type', 'module' or 'file', got {entry!r}",
                          file=file, key=key)
    given = [k for k in ("type", "module", "file") if k in entry]
    if len(given) != 1:
        raise ConfigError("a control needs exactly one of 'type' (a name), 'module' (a dotted path)"
                          f" or 'file' (a .py path), got {given or 'none'}", file=file, key=key)
    try:
        cls, ref = load_control_class(entry, base_dir)
    except LookupError as exc:
        raise ConfigError(str(exc).strip("'\""), file=file, key=f"{key}.{given[0]}") from None
    except Exception as exc:  # a plugin that fails to import: say which and why
        raise ConfigError(f"cannot load control {entry[given[0]]!r}: {type(exc).__name__}: {exc}",
                          file=file, key=f"{key}.{given[0]}") from exc
    declared = {p.name: p for p in cls.params}
    domains: dict[str, Domain] = {}
    for pname, raw in entry.items():
        if pname in RESERVED_KEYS:
            continue
        if pname not in declared:
            raise ConfigError(f"control {cls.name!r} has no parameter {pname!r}"
                              f"{closest_name(pname, list(declared))}; it has {', '.join(declared) or 'none'}",
                              file=file, key=f"{key}.{pname}")
        try:
            domains[pname] = parse_domain(declared[pname], raw)
        except ValueError as exc:
            raise ConfigError(f"{exc}; expected {declared[pname].describe_domain()}",
                              file=file, key=f"{key}.{pname}", value=raw,
                              expected=declared[pname].describe_domain()) from None
    for pname, p in declared.items():
        domains.setdefault(pname, Fixed(p.default))
    name = entry["name"] if "name" in entry else str(cls.name)
    if "name" in entry and (not isinstance(name, str) or not CONTROL_NAME.fullmatch(name)):
        raise ConfigError("a control's name is a word of letters, digits, _ and - (it names the control's "
                          "columns in details.log and the dashboard)", file=file, key=f"{key}.name", value=name,
                          expected="e.g. name: soft_vignette")
    return ControlSpec(name=name, ref=ref, cls=cls, domains=domains)
