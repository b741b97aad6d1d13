"""JSON responses that any logged content can go through.

Rows are served back (the grid's items, ``/rows/ID``) with whatever values their log line held:
``NaN``/``Infinity`` (which browsers' ``JSON.parse`` rejects and Starlette's encoder refuses), lone
surrogates (not encodable as UTF-8), or nesting deep enough to overflow the encoder. The common case
is encoded as is; only when that fails is the content made safe (non-finite numbers -> ``null``,
anything nested deeper than :data:`MAX_DEPTH` -> a placeholder string).
"""
from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

MAX_DEPTH = 64
TOO_DEEP = "(nested too deep)"


def json_safe(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that encodes as strict JSON (see the module docstring)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        if isinstance(value, dict):
            return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
        return [json_safe(v, depth + 1) for v in value]
    return value


def _dumps(content: Any) -> bytes:
    # ensure_ascii: a lone surrogate becomes a \ud800 escape (valid JSON) instead of an encoding error
    return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class SafeJSONResponse(JSONResponse):
    """A JSONResponse that never fails on its content's values."""

    def render(self, content: Any) -> bytes:
        try:
            return _dumps(content)
        except (ValueError, RecursionError):
            return _dumps(json_safe(content))
