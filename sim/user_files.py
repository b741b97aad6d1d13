"""Files a config names (base configs, label and class maps, weights, plugins): checked before reading.

A name that is no path at all (a NUL byte, ``~nosuchuser``, a 300-character component), a FIFO that
would block forever, ``/dev/zero`` that would fill memory, a JSON map nested 100k deep: each ends in one
:class:`~threedb.sim.errors.ConfigError` naming the key, never in a hang or a traceback. Only regular
files are read, up to a size cap per kind of file.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from threedb.sim.errors import ConfigError

#: Size caps: a config file, a JSON/text map (label map, class map, uid_to_targets).
MAX_CONFIG_BYTES = 1 << 20
MAX_MAP_BYTES = 64 << 20
#: The longest file-name component and the longest path most file systems allow (bytes).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095


def path_from_text(value: Any, *, base_dir: Path | None = None, file: Any = None, key: str | None = None,
                   what: str = "a file") -> Path:
    """``value`` (a path as written in a config) as a :class:`Path`, ``~`` expanded and made absolute
    against ``base_dir``; refuses text that cannot name a file."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigError(f"must be the path of {what}", file=file, key=key, value=value, expected="a file path")
    text = str(value)
    if "\0" in text:
        raise ConfigError(f"the path of {what} contains a NUL character", file=file, key=key,
                          expected="a file path")
    if len(text.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ConfigError(f"the path of {what} is longer than {MAX_PATH_BYTES} bytes ({text[:40]}...)", file=file,
                          key=key, expected="a file path")
    too_long = [part for part in text.split("/") if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES]
    if too_long:
        raise ConfigError(f"the path of {what} has a name longer than {MAX_NAME_BYTES} bytes "
                          f"({too_long[0][:40]}...)", file=file, key=key, expected="a file path")
    try:
        path = Path(text).expanduser()
    except RuntimeError:   # ~user whose home directory is unknown
        raise ConfigError(f"the path of {what} starts with {text.split('/')[0]!r}, a user without a home "
                          "directory here", file=file, key=key, expected="a file path") from None
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def file_status(path: Path) -> os.stat_result | None:
    """``os.stat`` of ``path``, or ``None`` when it does not exist (any other failure is raised)."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
            return None
        raise


def check_regular_file(path: Path, *, what: str, max_bytes: int | None = None, file: Any = None,
                       key: str | None = None, expected: str | None = None) -> os.stat_result:
    """Refuse ``path`` unless it is an existing regular file (symlinks followed) of at most ``max_bytes``."""
    try:
        info = file_status(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}", file=file, key=key,
                          expected=expected) from None
    if info is None:
        raise ConfigError(f"{what} not found: {path}", file=file, key=key, value=str(path),
                          expected=expected or "an existing file")
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {path} is a folder, not a file", file=file, key=key, expected=expected)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file (a device, FIFO or socket)", file=file, key=key,
                          expected=expected or "a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise ConfigError(f"{what} {path} is {info.st_size:,} bytes, more than the {max_bytes:,} allowed",
                          file=file, key=key, expected=expected)
    return info


def read_text(path: Path, *, what: str, max_bytes: int, file: Any = None, key: str | None = None,
              expected: str | None = None) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (read no further, should it grow)."""
    check_regular_file(path, what=what, max_bytes=max_bytes, file=file, key=key, expected=expected)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}", file=file, key=key) from None
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {path} is more than the {max_bytes:,} bytes allowed", file=file, key=key)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})", file=file, key=key,
                          expected=expected) from None


def read_json(path: Path, *, what: str, max_bytes: int = MAX_MAP_BYTES, file: Any = None, key: str | None = None,
              expected: str | None = None) -> Any:
    """The JSON value in a regular file (size-capped; nesting bounded by the parser's recursion limit)."""
    text = read_text(path, what=what, max_bytes=max_bytes, file=file, key=key, expected=expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                          file=file, key=key, expected=expected) from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is nested too deeply to read", file=file, key=key,
                          expected=expected) from None


__all__ = ["MAX_CONFIG_BYTES", "MAX_MAP_BYTES", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "path_from_text", "file_status",
           "check_regular_file", "read_text", "read_json"]
