"""Message framing without pickle: one JSON header frame followed by raw array frames.

The header carries protocol metadata and, under ``"arrays"``, the name, dtype and shape of each
following frame. Used between the master and its render worker processes (pipes) and, later, on
ZeroMQ sockets, so that no peer ever unpickles data it received.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

PROTOCOL_VERSION = 1
#: dtypes a peer may send; anything else (object arrays especially) is refused.
_ALLOWED_DTYPES = {"uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool"}


class FrameError(ValueError):
    """A received message is malformed or of another protocol version."""


def encode(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> list[bytes]:
    """Frames for ``header`` (JSON-serialisable) and ``arrays`` (sent as raw C-ordered bytes)."""
    arrays = arrays or {}
    specs = []
    frames: list[bytes] = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.name not in _ALLOWED_DTYPES:
            raise FrameError(f"array {name!r} has unsupported dtype {array.dtype}")
        specs.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape)})
        frames.append(array.tobytes())
    head = dict(header)
    head["v"] = PROTOCOL_VERSION
    head["arrays"] = specs
    return [json.dumps(head, separators=(",", ":")).encode()] + frames


def decode(frames: list[bytes]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode`; raises :class:`FrameError` on anything unexpected."""
    if not frames:
        raise FrameError("empty message")
    try:
        header = json.loads(frames[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("v") != PROTOCOL_VERSION:
        raise FrameError(f"unsupported protocol version {header.get('v') if isinstance(header, dict) else None!r}")
    specs = header.pop("arrays", [])
    if not isinstance(specs, list) or len(specs) != len(frames) - 1:
        raise FrameError(f"header declares {len(specs) if isinstance(specs, list) else '?'} arrays,"
                         f" message has {len(frames) - 1}")
    arrays: dict[str, np.ndarray] = {}
    for spec, raw in zip(specs, frames[1:]):
        try:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(n) for n in spec["shape"])
            name = str(spec["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FrameError(f"bad array description {spec!r}: {exc}") from None
        if dtype.name not in _ALLOWED_DTYPES:
            raise FrameError(f"array {name!r} has unsupported dtype {dtype}")
        if int(np.prod(shape)) * dtype.itemsize != len(raw):
            raise FrameError(f"array {name!r}: {len(raw)} bytes do not fit shape {shape} of {dtype}")
        arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return header, arrays


def send_frames(conn: Any, frames: list[bytes]) -> None:
    """Send a framed message over a ``multiprocessing`` connection (count, then each frame)."""
    conn.send_bytes(len(frames).to_bytes(4, "little"))
    for frame in frames:
        conn.send_bytes(frame)


def recv_frames(conn: Any) -> list[bytes]:
    """Receive a message sent with :func:`send_frames`."""
    count = int.from_bytes(conn.recv_bytes(), "little")
    return [conn.recv_bytes() for _ in range(count)]
