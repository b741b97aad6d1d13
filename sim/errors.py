"""Error types shared across threedb: each says what was wrong and where."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class ThreeDBError(Exception):
    """Base class of every error threedb reports to a user (printed without a traceback)."""


class ConfigError(ThreeDBError):
    """A configuration value is wrong.

    The message names the config file, the key path inside it (e.g. ``controls[2].zoom_factor``),
    the offending value and what was expected.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, key: str | None = None,
                 value: Any = None, expected: str | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.key = key
        self.value = value
        self.expected = expected
        self.detail = message
        where = ": ".join(part for part in (self.file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class AssetError(ThreeDBError):
    """A mesh or environment file is missing, unreadable or unusable; the message names the file."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class RenderError(ThreeDBError):
    """Blender failed to set up or render a scene."""


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters other than newline and tab (an escape
    sequence, a carriage return, a bell that a hostile file name or key may carry) as ``\\x..`` escapes."""
    return "".join(ch if ch in "\n\t" or not _is_control(ch) else ascii(ch)[1:-1] for ch in text)


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029) or 0x202A <= code <= 0x202E \
        or 0x2066 <= code <= 0x2069
