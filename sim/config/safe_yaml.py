"""Reading a YAML config with bounds: no value PyYAML cannot build, no nesting, alias loop or alias bomb
beyond the limits, so a hostile file costs at most a few milliseconds and one clear error.

PyYAML's ``SafeLoader`` already refuses arbitrary objects, but it raises bare ``ValueError`` /
``KeyError`` for values such as ``!!int abc`` or ``2001-13-45``, recurses once per nesting level (a
thousand ``[`` exhaust the stack), builds self-referencing lists from ``&c [*c]`` and keeps aliases
shared, so that ten-fold aliases nested six deep stand for a million values that later code walks one
by one. :func:`load_yaml_text` composes the node graph first, checks it, then constructs it.
"""
from __future__ import annotations

from typing import Any

import yaml

#: Deepest nesting of sequences and mappings a config may use (ours use fewer than ten levels).
MAX_DEPTH = 64
#: Most values a config may stand for once its aliases are expanded.
MAX_NODES = 200_000


class YAMLLimitError(yaml.MarkedYAMLError):
    """A YAML document beyond the bounds above (or with a value PyYAML's constructors refuse)."""


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while composing and reports constructor failures with their line."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimitError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError, AttributeError) as exc:
            tag = node.tag.rsplit(":", 1)[-1] if node.tag.startswith("tag:yaml.org") else node.tag
            value = repr(node.value) if isinstance(node, yaml.ScalarNode) else f"a {type(node).__name__[:-4].lower()}"
            value = value if len(value) <= 60 else value[:60] + "..."
            raise YAMLLimitError(None, None, f"cannot read {value} as {tag}: {_reason(exc)}",
                                 node.start_mark) from None


def _python_tuple(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> str:
    """The original 3DB's configs (written by ``yaml.dump``) hold ranges as ``!!python/tuple [lo, hi]``:
    read as the text ``"(lo, hi)"``, its other spelling of a range, never as a Python object."""
    return "(" + ", ".join(str(item) for item in loader.construct_sequence(node)) + ")"


BoundedLoader.add_constructor("tag:yaml.org,2002:python/tuple", _python_tuple)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return "not a value of this type"
    text = str(exc).split(";")[0].strip()
    return text[:120] or type(exc).__name__


def check_node_graph(root: yaml.Node) -> None:
    """Refuse alias cycles and documents that expand to more than :data:`MAX_NODES` values.

    Iterative, and each node is counted once with its expanded size (aliases share nodes), so the
    check is linear in the file's size however large the expansion would be."""
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size = 1 + sum(expanded[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise YAMLLimitError(None, None, f"stands for more than {MAX_NODES:,} values once its aliases "
                                     "are expanded (an alias bomb?)", node.start_mark)
            expanded[key] = size
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise YAMLLimitError(None, None, "an alias refers to a value that contains it (a loop)", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise YAMLLimitError(None, None, "an alias refers to a value that contains it (a loop)",
                                     child.start_mark)
            if id(child) not in expanded:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml_text(text: str, loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """The single YAML document in ``text`` (``None`` if empty); raises ``yaml.YAMLError`` subclasses."""
    instance = loader(text)
    try:
        node = instance.get_single_node()
        if node is None:
            return None
        check_node_graph(node)
        try:
            return instance.construct_document(node)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError, AttributeError) as exc:
            raise YAMLLimitError(None, None, f"cannot read a value: {_reason(exc)}", node.start_mark) from None
    finally:
        instance.dispose()


__all__ = ["MAX_DEPTH", "MAX_NODES", "BoundedLoader", "YAMLLimitError", "check_node_graph", "load_yaml_text"]
