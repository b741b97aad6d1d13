"""The validated experiment: schema, error messages and :func:`load_config`.

Pipeline of :func:`load_config`: read the file and its ``base_config`` chain with provenance
(:mod:`.loader`) -> map an original-3DB config (:mod:`.legacy`) -> apply overrides -> resolve
relative paths -> validate the sections with pydantic (``extra='forbid'`` everywhere) -> resolve
every control entry with the control registry -> :class:`Experiment`.

Validation problems become one :class:`~threedb.sim.errors.ConfigError` naming the file that
wrote the bad value, its key path and what was expected.
"""
from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from threedb.controls.registry import BUILTIN_CONTROLS, ControlSpec, resolve_control
from threedb.sim.config.legacy import is_legacy, map_legacy, normalize_file
from threedb.sim.config.loader import (
    KeyPath, Provenance, apply_overrides, format_key, load_chain, parse_key, resolve_paths,
)
from threedb.sim.config.values import check_values
from threedb.sim.errors import ConfigError
from threedb.sim.render.settings import PassName, RenderSettings

DEFAULT_POLICY: dict[str, Any] = {"type": "random", "samples": 10}


# --------------------------------------------------------------------------- sections

def _names(value: Any, what: str, everything: str) -> Any:
    """``'all'`` or a list of distinct non-empty names."""
    if value == everything:
        return value
    if isinstance(value, str):
        raise ValueError(f"must be {everything!r} or a list of {what} (write [{value}] for just one)")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be {everything!r} or a list of {what}")
    if not value:
        raise ValueError(f"must list at least one of the {what} (or be {everything!r})")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{item!r} is not a name; expected a list of {what}")
    duplicates = sorted({item for item in value if list(value).count(item) > 1})
    if duplicates:
        raise ValueError(f"lists {', '.join(duplicates)} more than once")
    return tuple(value)


class AssetsConfig(BaseModel):
    """The ``assets:`` section: where meshes and environments come from and which are used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Union[Literal["default"], Path] = Field(
        "default", description="'default' (the packaged asset pack) or a folder, relative to the config file")
    objects: Union[Literal["all"], tuple[str, ...]] = Field("all", description="'all' or a list of object uids")
    environments: Union[Literal["all"], tuple[str, ...]] = Field(
        "all", description="'all' or a list of environment names")
    normalize: StrictBool = Field(True, description="centre meshes and scale them to object_size (trimesh)")
    object_size: float = Field(1.0, gt=0, allow_inf_nan=False,
                               description="largest extent of a normalised mesh, scene units")

    @field_validator("root", mode="before")
    @classmethod
    def _root(cls, value: Any) -> Any:
        if value == "default":
            return value
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ValueError("must be 'default' or the path of a folder")
        path = Path(value).expanduser()
        if not path.exists():
            raise ValueError("folder does not exist")
        if not path.is_dir():
            raise ValueError("is a file, not a folder")
        return path

    @field_validator("objects", mode="before")
    @classmethod
    def _objects(cls, value: Any) -> Any:
        return _names(value, "object uids", "all")

    @field_validator("environments", mode="before")
    @classmethod
    def _environments(cls, value: Any) -> Any:
        return _names(value, "environment names", "all")


class PolicyConfig(BaseModel):
    """The ``policy:`` section: ``type`` is checked here, the rest by the chosen policy."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="policy name (random, grid, ...) or a plugin module path")

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a policy name such as random or grid")
        return value


class LoggingConfig(BaseModel):
    """The ``logging:`` section: which jobs keep images, which extra passes are kept beside them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log_images: Literal["all", "failures", "none"] = Field(
        "all", description="keep the RGB image of every job, of misclassified/failed jobs only, or of none")
    extra_passes: tuple[PassName, ...] = Field(
        (), description="render passes (depth, mask, uv) kept beside the image; render.passes must produce them")
    loggers: tuple[Literal["json", "images", "tensorboard"], ...] = Field(
        ("json", "images"), description="json: details.log (always written); images: the RGB image and, unless "
        "extra_passes says otherwise, every rendered pass (without it, no images unless log_images asks); "
        "tensorboard: event files under RUN_DIR/tensorboard")

    @field_validator("loggers", mode="before")
    @classmethod
    def _loggers(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"must be a list of logger names (write [{value}] for just one)")
        return value

    def effective(self, rendered: tuple[str, ...]) -> dict[str, Any]:
        """The section with the loggers' defaults applied: the images logger keeps images of every job and
        every ``rendered`` pass, as the original 3DB's did; without it no images are kept. Keys written in
        the config win."""
        images = "images" in self.loggers
        explicit = self.model_fields_set
        loggers = tuple(dict.fromkeys(("json",) + tuple(self.loggers)))   # details.log is the record
        log_images = self.log_images if "log_images" in explicit else ("all" if images else "none")
        passes = self.extra_passes if "extra_passes" in explicit or "loggers" not in explicit \
            else (rendered if images else ())
        # passes are kept beside an image: with no images kept (e.g. a legacy json-only logger list over a
        # base that keeps passes) there is nothing to keep them beside
        return {"log_images": log_images, "extra_passes": list(passes) if log_images != "none" else [],
                "loggers": list(loggers)}

    @field_validator("extra_passes", mode="before")
    @classmethod
    def _passes(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            raise ValueError(f"must be a list of pass names (write [{value}] for just one)")
        return value


def _mapping_or_none(value: Any) -> Any:
    if value is not None and not isinstance(value, dict):
        raise ValueError("must be a mapping (or left out)")
    return value


class ExperimentSchema(BaseModel):
    """Every top-level key of a config (after ``base_config`` merging and legacy mapping)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, strict=True, description="experiment seed; job seeds derive from it")
    assets: AssetsConfig = Field(default_factory=AssetsConfig)
    render: RenderSettings = Field(default_factory=RenderSettings)
    controls: list[Any] = Field(default_factory=list, description="control entries (resolved separately)")
    policy: PolicyConfig = Field(default_factory=lambda: PolicyConfig(**DEFAULT_POLICY))
    inference: Optional[dict[str, Any]] = None
    evaluation: Optional[dict[str, Any]] = None
    logging: Optional[LoggingConfig] = None

    @field_validator("assets", "render", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # "render:" with nothing under it

    @field_validator("controls", mode="before")
    @classmethod
    def _controls(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of control entries (each a mapping with 'type', 'module' or 'file')")
        return value

    @field_validator("inference", "evaluation", "logging", mode="before")
    @classmethod
    def _optional_mapping(cls, value: Any) -> Any:
        return _mapping_or_none(value)


#: The top-level keys a run config may have: ours and the original 3DB's (mapped by .legacy).
CONFIG_SECTIONS = frozenset(ExperimentSchema.model_fields) | {"render_args"}


# --------------------------------------------------------------------------- the experiment

@dataclass(frozen=True)
class Experiment:
    """A validated experiment, ready for the search space, the policy and the run pipeline."""

    source: Path                          #: the config file loaded
    files: list[Path]                     #: the inheritance chain in merge order (root base first, source last)
    seed: int
    assets: AssetsConfig
    render: RenderSettings
    controls: list[ControlSpec]
    policy: dict[str, Any]                #: ``type`` plus the policy's own keys
    inference: Optional[dict[str, Any]]
    evaluation: Optional[dict[str, Any]]
    logging: Optional[dict[str, Any]]
    notes: list[str]                      #: what legacy mapping changed or dropped
    resolved: dict[str, Any]              #: merged, mapped, path-resolved, defaults filled in; loads back as is

    def control(self, name: str) -> ControlSpec:
        """The control whose instance name is ``name``."""
        for spec in self.controls:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_yaml(self) -> str:
        """The resolved config as YAML (loading it gives the same experiment)."""
        return yaml.safe_dump(self.resolved, sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_yaml` to ``path``."""
        path = Path(path)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path


def load_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Experiment:
    """Load, merge, map and validate the experiment config at ``path``.

    ``overrides`` maps dotted key paths (``"render.samples"``, ``"controls[0].zoom_factor"``) to
    values applied last, as if written on the command line. Raises
    :class:`~threedb.sim.errors.ConfigError` naming the file, key path and expected value.
    """
    loaded = load_chain(path, sections=CONFIG_SECTIONS, normalize=normalize_file)
    return _build(loaded.data, loaded.provenance, source=loaded.files[-1], files=loaded.files,
                  overrides=overrides, mapped=loaded.notes)


def experiment_from_dict(data: Mapping[str, Any], *, source: str | Path | None = None,
                         overrides: Mapping[str, Any] | None = None) -> Experiment:
    """Validate a config given as a mapping (e.g. a run's saved ``resolved`` dict).

    ``source`` is the file the mapping stands for: relative paths resolve against its folder
    (the working directory if ``None``). ``base_config`` is not followed here.
    """
    data = copy.deepcopy(dict(data))
    if "base_config" in data:
        raise ConfigError("base_config is only followed when loading a file", key="base_config",
                          file=str(source) if source else None)
    origin: Path | str = Path(source).absolute() if source is not None else "<dict>"
    provenance = Provenance()
    for key, value in data.items():
        provenance.record((key,), value, origin)
    src = origin if isinstance(origin, Path) else Path.cwd() / "<dict>"
    return _build(data, provenance, source=src, files=[src] if isinstance(origin, Path) else [],
                  overrides=overrides)


def _build(data: dict[str, Any], prov: Provenance, *, source: Path, files: list[Path],
           overrides: Mapping[str, Any] | None, mapped: list[str] | None = None) -> Experiment:
    check_values(data, prov)
    notes = map_legacy(data, prov, mapped) if mapped or is_legacy(data) else []
    if "policy" not in data:  # so that an override such as policy.samples=5 refines the default
        data["policy"] = copy.deepcopy(DEFAULT_POLICY)
    if overrides:
        apply_overrides(data, prov, overrides)
        check_values(data, prov)
    resolve_paths(data, prov)
    try:
        schema = ExperimentSchema.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, prov, data) from None
    controls = _resolve_controls(schema.controls, prov)
    logging = schema.logging.effective(tuple(schema.render.passes)) if schema.logging is not None else None
    resolved = _plain({
        "seed": schema.seed,
        "assets": schema.assets.model_dump(mode="json"),
        "render": schema.render.model_dump(mode="json"),
        "controls": [_normalised_entry(entry, spec) for entry, spec in zip(schema.controls, controls)],
        "policy": schema.policy.model_dump(mode="json"),
        "inference": schema.inference,
        "evaluation": schema.evaluation,
        "logging": logging,
    })
    return Experiment(source=source, files=list(files), seed=schema.seed, assets=schema.assets,
                      render=schema.render, controls=controls, policy=schema.policy.model_dump(),
                      inference=schema.inference, evaluation=schema.evaluation, logging=logging,
                      notes=notes, resolved=resolved)


# --------------------------------------------------------------------------- controls

def _resolve_controls(entries: list[Any], prov: Provenance) -> list[ControlSpec]:
    """Resolve every control entry; instance names must be unique."""
    specs: list[ControlSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        path: KeyPath = ("controls", i)
        try:
            spec = resolve_control(entry, key=format_key(path), file=prov.file_of(path),
                                   base_dir=prov.base_dir(path))
        except ConfigError as exc:
            raise _reattribute(exc, prov) from None
        if spec.name in seen:
            first = seen[spec.name]
            raise prov.error(path, f"two controls are both named {spec.name!r} (controls[{first}] and"
                             f" controls[{i}]); give one of them its own `name:` (e.g. name: {spec.name}_2)",
                             value=spec.name)
        seen[spec.name] = i
        specs.append(spec)
    return specs


def _reattribute(exc: ConfigError, prov: Provenance) -> ConfigError:
    """The registry names the file of the whole entry; name the file of the exact key instead."""
    if not exc.key:
        return exc
    try:
        path = parse_key(exc.key)
    except ConfigError:
        return exc
    file = prov.file_of(path)
    if file is None or file == exc.file:
        return exc
    return ConfigError(exc.detail, file=file, key=exc.key, value=exc.value, expected=exc.expected)


_BUILTIN_BY_REF = {ref: name for name, ref in BUILTIN_CONTROLS.items()}


def _normalised_entry(entry: Mapping[str, Any], spec: ControlSpec) -> dict[str, Any]:
    """The entry as written, with a module path of a built-in control (e.g. 3DB's) replaced by ``type:``."""
    entry = dict(entry)
    if "module" in entry and spec.ref in _BUILTIN_BY_REF:
        entry.pop("module")
        entry.pop("class", None)
        entry = {"type": _BUILTIN_BY_REF[spec.ref], **entry}
    return entry


def _plain(value: Any) -> Any:
    """Only dicts, lists, str, numbers, bools and None (JSON/YAML safe)."""
    if isinstance(value, Mapping):
        return {(k if isinstance(k, (str, int, float, bool)) or k is None else str(k)): _plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    return _plain(item()) if callable(item) else str(value)


# --------------------------------------------------------------------------- error messages

_SIMPLE: dict[str, str] = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "iterable_type": "must be a list",
    "path_type": "must be a path",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def _model_at(path: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model under ``root`` that validates the mapping at ``path`` (for listing its keys)."""
    model: type[BaseModel] | None = root
    for part in path:
        if model is None or part not in model.model_fields:
            return None
        model = _find_model(model.model_fields[part].annotation)
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _number(value: Any) -> Any:
    """``0.0`` -> ``0`` in messages (bounds are often floats)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(error: Mapping[str, Any], root: type[BaseModel]) -> tuple[str, bool]:
    """What is wrong, in words, and whether to append the offending value."""
    kind, ctx, loc = error["type"], error.get("ctx") or {}, error["loc"]
    if kind == "missing":
        return "is required", False
    if kind == "extra_forbidden":
        model = _model_at(tuple(loc[:-1]), root)
        known = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        text = f"unknown key {loc[-1]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        if known:
            text += f"; expected one of {', '.join(known)}"
        return text, False
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        options = re.findall(r"'([^']*)'", expected)
        hint = difflib.get_close_matches(str(error.get("input")), options, n=1, cutoff=0.6)
        return f"must be {expected}" + (f" (did you mean {hint[0]!r}?)" if hint else ""), True
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error.get("msg", "")))
        return message, "got" not in message
    if kind in _SIMPLE:
        try:
            return _SIMPLE[kind].format(**{k: _number(v) for k, v in ctx.items()}), True
        except (KeyError, IndexError):
            pass
    message = str(error.get("msg", "is not valid"))
    return message[:1].lower() + message[1:], True


def _lookup(data: Any, path: KeyPath) -> Any:
    """The value at ``path`` in ``data`` (``None`` if absent)."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def config_error_from_validation(exc: ValidationError, prov: Provenance, data: Mapping[str, Any],
                                 root: type[BaseModel] = ExperimentSchema) -> ConfigError:
    """One readable ConfigError for a pydantic ValidationError of ``root``: the first problem, and how many more."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc: KeyPath = tuple(p for p in first["loc"] if isinstance(p, (str, int)))
    text, with_value = _describe(first, root)
    value = first.get("input")
    if first["type"] == "missing" and loc and isinstance(loc[-1], int):  # a fixed-length list too short
        loc = loc[:-1]
        text, with_value, value = f"has too few items (item [{first['loc'][-1]}] is missing)", True, _lookup(data, loc)
    if with_value:
        text += f", got {_short(value)}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return prov.error(loc, text, value=value if with_value else None)


__all__ = ["AssetsConfig", "PolicyConfig", "ExperimentSchema", "Experiment", "load_config", "config_error_from_validation",
           "experiment_from_dict", "DEFAULT_POLICY"]
