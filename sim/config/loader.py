"""Reading config files: YAML, ``base_config`` inheritance with a deep merge, and provenance.

Every key path of the merged config remembers which file wrote it (:class:`Provenance`), so
that an error names the file where the bad value was written and relative paths resolve against
the directory of that file, not of the top file.

Key paths are tuples of mapping keys (``str``) and list indices (``int``), written
``render.samples`` or ``controls[2].zoom_factor`` in messages (:func:`format_key`).
"""
from __future__ import annotations

import copy
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union

import yaml

from threedb.sim.config.safe_yaml import BoundedLoader, load_yaml_text
from threedb.sim.errors import ConfigError
from threedb.sim.user_files import MAX_CONFIG_BYTES, file_status, path_from_text, read_text

KeyPath = tuple[Union[str, int], ...]

#: Where a value came from: a config file, or this label for ``overrides`` (command-line flags).
COMMAND_LINE = "<command line>"
Source = Union[Path, str]

#: Keys whose values are file or folder paths, resolved against the directory of the file that
#: wrote them. ``"*"`` matches any list index. Later pipeline stages may add their keys here.
PATH_KEYS: tuple[KeyPath, ...] = (
    ("assets", "root"),
    ("controls", "*", "file"),
    ("policy", "file"),
    ("inference", "file"),
    ("inference", "label_map"),
    ("inference", "weights"),
    ("inference", "torchscript"),
    ("inference", "onnx"),
    ("evaluation", "file"),
    ("evaluation", "args", "classmap_path"),
)

#: Values of path keys that are names, not paths.
_NOT_PATHS = frozenset({"default"})


# --------------------------------------------------------------------------- key paths

def format_key(path: KeyPath) -> str:
    """``('controls', 2, 'zoom_factor')`` -> ``'controls[2].zoom_factor'``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_KEY_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def parse_key(text: str) -> KeyPath:
    """``'controls[2].zoom_factor'`` -> ``('controls', 2, 'zoom_factor')``; raise ConfigError if malformed."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _KEY_TOKEN.match(text, pos)
        if not match or (match.group(0).startswith(".") and not parts):
            raise ConfigError(f"malformed key path {text!r}; expected e.g. render.samples or"
                              " controls[0].zoom_factor", file=COMMAND_LINE)
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if not parts or isinstance(parts[0], int):
        raise ConfigError(f"malformed key path {text!r}; expected e.g. render.samples", file=COMMAND_LINE)
    return tuple(parts)


def display_source(source: Source | None) -> str | None:
    """How a source is named in messages: a path relative to the working directory when inside it."""
    if source is None or isinstance(source, str):
        return source
    try:
        return str(source.relative_to(Path.cwd()))
    except ValueError:
        return str(source)


# --------------------------------------------------------------------------- provenance

@dataclass
class Provenance:
    """Which source wrote each key path of a merged config.

    A mapping that several files contributed to is attributed to the last of them; a lookup for a
    path that was never written (a missing key) falls back to its longest written prefix.
    """

    origin: dict[KeyPath, Source] = field(default_factory=dict)

    def record(self, path: KeyPath, value: Any, source: Source) -> None:
        """``source`` wrote ``value`` at ``path``, replacing whatever was there."""
        self.forget(path)
        self._record_tree(path, value, source)

    def _record_tree(self, path: KeyPath, value: Any, source: Source) -> None:
        self.origin[path] = source
        if isinstance(value, Mapping):
            for key, item in value.items():
                self._record_tree(path + (key,), item, source)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._record_tree(path + (index,), item, source)

    def touch(self, path: KeyPath, source: Source) -> None:
        """``source`` merged keys into the mapping at ``path``."""
        self.origin[path] = source

    def forget(self, path: KeyPath) -> None:
        """Drop ``path`` and everything under it."""
        if path not in self.origin:   # nothing was recorded under a path that was not recorded itself
            return
        n = len(path)
        for key in [k for k in self.origin if k[:n] == path]:
            del self.origin[key]

    def move(self, old: KeyPath, new: KeyPath) -> None:
        """Re-attribute everything under ``old`` to the same place under ``new`` (legacy mapping)."""
        n = len(old)
        moved = {new + k[n:]: s for k, s in self.origin.items() if k[:n] == old}
        self.forget(old)
        self.forget(new)
        self.origin.update(moved)

    def source_of(self, path: KeyPath) -> Source | None:
        """The source that wrote ``path`` or, failing that, its longest written prefix."""
        for n in range(len(path), 0, -1):
            source = self.origin.get(tuple(path[:n]))
            if source is not None:
                return source
        return None

    def file_of(self, path: KeyPath) -> str | None:
        """The source of ``path`` as named in messages."""
        return display_source(self.source_of(path))

    def base_dir(self, path: KeyPath) -> Path:
        """The directory relative paths written at ``path`` resolve against."""
        source = self.source_of(path)
        return source.parent if isinstance(source, Path) else Path.cwd()

    def error(self, path: KeyPath, message: str, **kwargs: Any) -> ConfigError:
        """A ConfigError for ``path``, naming the file that wrote it."""
        return ConfigError(message, file=self.file_of(path), key=format_key(path) or None, **kwargs)


# --------------------------------------------------------------------------- YAML

class _UniqueKeyLoader(BoundedLoader):
    """A bounded SafeLoader that rejects duplicate keys in a mapping (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"duplicate key {key!r} (first written on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        except TypeError:  # unhashable key: construct_mapping reports it
            pass
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one config file: a YAML mapping (an empty file is an empty mapping); a regular file of at most
    :data:`~threedb.sim.user_files.MAX_CONFIG_BYTES`, within :mod:`.safe_yaml`'s bounds."""
    shown = display_source(path)
    info = file_status(path)
    if info is None:
        raise ConfigError("config file does not exist", file=shown)
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError("is a folder, not a config file", file=shown)
    text = read_text(path, what="config file", max_bytes=MAX_CONFIG_BYTES, file=shown)
    try:
        data = load_yaml_text(text, _UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"invalid YAML{where}: {problem}", file=shown) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=shown) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level of a config must be a mapping of keys to values,"
                          f" got a {type(data).__name__}", file=shown)
    return data


# --------------------------------------------------------------------------- merging

#: Blocks that name a plugin: ``(alternative source keys, keys that refine the source)``. When a file
#: (or ``--set``) changes a block's plugin, its block replaces the base's instead of merging into it, as
#: the original 3DB's (shallow) inheritance did: ``grid`` must not inherit ``random``'s ``samples``.
PLUGIN_BLOCKS: dict[KeyPath, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("policy",): (("type", "module", "file"), ()),
    ("inference",): (("torchvision", "module", "file", "torchscript", "onnx"), ("class",)),
    ("evaluation",): (("type", "module", "file"), ("class",)),
}


def plugin_change(path: KeyPath, base: Mapping[Any, Any], child: Mapping[Any, Any]) -> dict[str, Any] | None:
    """``None`` when ``child`` refines the plugin block ``base`` at ``path`` (the two merge); otherwise what
    is kept of ``base`` when ``child`` replaces it: nothing when the source changes (``type``, ``module``,
    ``file``, ...), the source when only ``class`` changes (``class: resnet50`` keeps ``module:``)."""
    if path not in PLUGIN_BLOCKS:
        return None
    sources, refiners = PLUGIN_BLOCKS[path]

    def picked(block: Mapping[Any, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: block[k] for k in keys if k in block and block[k] is not None}

    child_source, base_source = picked(child, sources), picked(base, sources)
    if child_source and child_source != base_source:
        return {}
    child_refined = picked(child, refiners)
    if child_refined and child_refined != {k: base.get(k) for k in child_refined}:
        return base_source
    return None


def deep_merge(target: dict[Any, Any], data: Mapping[Any, Any], source: Source,
               provenance: Provenance, prefix: KeyPath = ()) -> None:
    """Merge ``data`` into ``target`` in place: mappings merge recursively, anything else replaces; a
    plugin block whose plugin changes replaces the base's (:func:`plugin_change`)."""
    for key, value in data.items():
        path = prefix + (key,)
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            kept = plugin_change(path, target[key], value)
            if kept is not None:
                replace_block(target, key, value, kept, source, provenance, path)
                continue
            provenance.touch(path, source)
            deep_merge(target[key], value, source, provenance, path)
        else:
            target[key] = copy.deepcopy(value)
            provenance.record(path, value, source)


def replace_block(parent: dict[Any, Any], key: Any, value: Mapping[Any, Any], kept: Mapping[str, Any],
                  source: Source, provenance: Provenance, path: KeyPath) -> None:
    """``parent[key] = kept + value``: ``kept``'s keys keep their provenance, the rest is ``source``'s."""
    kept_origins = {k: provenance.source_of(path + (k,)) for k in kept}
    parent[key] = {**copy.deepcopy(dict(kept)), **copy.deepcopy(dict(value))}
    provenance.record(path, parent[key], source)
    for k, origin in kept_origins.items():
        if k not in value and origin is not None:
            provenance.record(path + (k,), kept[k], origin)


@dataclass
class LoadedConfig:
    """A config file with its bases merged in."""

    data: dict[str, Any]          #: the merged mapping, ``base_config`` removed
    provenance: Provenance
    files: list[Path]             #: the inheritance chain in merge order: root base first, the file itself last
    notes: list[str] = field(default_factory=list)   #: what ``normalize`` changed, file by file


#: Rewrites one file's mapping in place before it is merged (e.g. original-3DB forms); returns notes.
Normalizer = Callable[[dict[str, Any], Path], list[str]]


def load_chain(path: str | Path, *, sections: frozenset[str] | None = None,
               normalize: Normalizer | None = None) -> LoadedConfig:
    """Load ``path`` and, recursively, its ``base_config``; merge root-first (later files win).

    With ``sections`` (the top-level keys the caller's schema knows), a non-empty *base* file none of
    whose top-level keys is one of them is refused as "not a config" without echoing its keys: a shared
    config's ``base_config: /etc/shadow`` must not print that file's first line in an unknown-key error.
    ``normalize`` rewrites each file before it is merged, so that a child and its base written in
    different forms (``policy.module`` vs ``policy.type``) merge as the same keys.
    """
    return _load(Path(path).expanduser().absolute(), (), sections, normalize)


#: Longest ``base_config`` chain (the file itself included); real configs use two or three.
MAX_CHAIN = 32


def _load(path: Path, stack: tuple[Path, ...], sections: frozenset[str] | None,
          normalize: Normalizer | None) -> LoadedConfig:
    path = Path(os.path.normpath(path))
    raw = read_yaml(path)
    shown = display_source(path)
    if stack and sections is not None and raw and not (set(raw) & (sections | {"base_config"})):
        raise ConfigError(f"is not a config for this command: none of its top-level keys is one of "
                          f"{', '.join(sorted(sections))}", file=shown)
    base_ref = raw.pop("base_config", None)
    if base_ref is None:
        loaded = LoadedConfig({}, Provenance(), [])
    else:
        if not isinstance(base_ref, (str, os.PathLike)) or not str(base_ref).strip():
            raise ConfigError(f"must be the path of another config file, got {_short(base_ref)}",
                              file=shown, key="base_config")
        base = Path(os.path.normpath(path_from_text(base_ref, base_dir=path.parent, file=shown, key="base_config",
                                                    what="a base config file")))
        chain = stack + (path,)
        if base in chain:
            cycle = " -> ".join(display_source(p) or "" for p in chain[chain.index(base):] + (base,))
            raise ConfigError(f"base_config files include each other in a cycle: {cycle}",
                              file=shown, key="base_config", value=base_ref)
        if len(chain) >= MAX_CHAIN:
            raise ConfigError(f"base_config chain longer than {MAX_CHAIN} files (from "
                              f"{display_source(chain[0])})", file=shown, key="base_config")
        info = file_status(base)
        if info is None or not stat.S_ISREG(info.st_mode):
            what = ("does not exist" if info is None else "is a folder" if stat.S_ISDIR(info.st_mode)
                    else "is not a regular file")
            raise ConfigError(f"base config file {display_source(base)} {what}",
                              file=shown, key="base_config", value=base_ref)
        loaded = _load(base, chain, sections, normalize)
    if normalize is not None:
        loaded.notes.extend(normalize(raw, path))
    deep_merge(loaded.data, raw, path, loaded.provenance)
    loaded.files.append(path)
    return loaded


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- overrides

def apply_overrides(data: dict[str, Any], provenance: Provenance, overrides: Mapping[str, Any]) -> None:
    """Set dotted key paths (``{"render.samples": 4}``) in ``data``; a mapping value merges into a mapping."""
    for text, value in overrides.items():
        path = parse_key(str(text))
        if path[0] == "base_config":
            raise ConfigError("base_config cannot be overridden; load that file instead",
                              file=COMMAND_LINE, key="base_config")
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            here = path[:depth + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or not -len(node) <= part < len(node):
                    size = f"a list of {len(node)}" if isinstance(node, list) else "not a list"
                    raise ConfigError(f"cannot set {text!r}: {format_key(path[:depth]) or 'the top level'}"
                                      f" is {size}", file=COMMAND_LINE, key=format_key(here))
                node = node[part]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {text!r}: {format_key(path[:depth])} is not a mapping",
                                  file=COMMAND_LINE, key=format_key(here))
            if node.get(part) is None:
                node[part] = {}
                provenance.record(here, {}, COMMAND_LINE)
            node = node[part]
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or not -len(node) <= last < len(node):
                raise ConfigError(f"cannot set {text!r}: no such list item", file=COMMAND_LINE, key=format_key(path))
            node[last] = copy.deepcopy(value)
            provenance.record(path, value, COMMAND_LINE)
        elif not isinstance(node, dict):
            raise ConfigError(f"cannot set {text!r}: {format_key(path[:-1])} is not a mapping",
                              file=COMMAND_LINE, key=format_key(path))
        elif isinstance(value, Mapping) and isinstance(node.get(last), dict):
            kept = plugin_change(path, node[last], value)
            if kept is not None:
                replace_block(node, last, value, kept, COMMAND_LINE, provenance, path)
                continue
            provenance.touch(path, COMMAND_LINE)
            deep_merge(node[last], value, COMMAND_LINE, provenance, path)
        elif path[:-1] in PLUGIN_BLOCKS and plugin_change(path[:-1], node, {last: value}) is not None:
            # --set policy.type=grid: the block starts afresh (keeping its source for a new class)
            parent = _get(data, path[:-2]) if len(path) > 2 else data
            kept = plugin_change(path[:-1], node, {last: value}) or {}
            replace_block(parent, path[-2], {last: value}, kept, COMMAND_LINE, provenance, path[:-1])
        else:
            node[last] = copy.deepcopy(value)
            provenance.record(path, value, COMMAND_LINE)


def parse_override(text: str) -> tuple[str, Any]:
    """``'render.samples=4'`` -> ``('render.samples', 4)``: the value is read as YAML (for CLI flags)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"an override is KEY=VALUE (e.g. render.samples=4), got {text!r}", file=COMMAND_LINE)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parse_key(key.strip())
    return key.strip(), value


# --------------------------------------------------------------------------- paths

def _matches(node: Any, pattern: KeyPath, prefix: KeyPath = ()) -> Iterator[KeyPath]:
    if not pattern:
        yield prefix
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _matches(item, rest, prefix + (index,))
    elif isinstance(node, dict) and head in node:
        yield from _matches(node[head], rest, prefix + (head,))


def _get(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: KeyPath, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def resolve_paths(data: dict[str, Any], provenance: Provenance,
                  keys: tuple[KeyPath, ...] = PATH_KEYS) -> None:
    """Make the relative paths under ``keys`` absolute, each against the directory of the file that wrote it.

    ``None`` and names such as ``default`` are left as they are; any other value that is not a path
    (a number, a list, a string with a NUL byte, ``~user`` of an unknown user) is refused here.
    """
    for pattern in keys:
        for path in list(_matches(data, pattern)):
            value = _get(data, path)
            if value is None or (isinstance(value, str) and value in _NOT_PATHS):
                continue
            resolved = path_from_text(value, base_dir=provenance.base_dir(path), file=provenance.file_of(path),
                                      key=format_key(path), what="a file or folder")
            try:
                resolved = resolved.resolve()
            except (OSError, RuntimeError):   # a symlink loop: keep the path; opening it will say so
                resolved = Path(os.path.abspath(resolved))
            _set(data, path, str(resolved))
