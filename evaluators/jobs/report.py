"""The ``report.json`` of a robustness job (format ``threedb-robustness-report``, version 1; docs/robustness.md)."""
from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Iterable, Mapping, Sequence

REPORT_FORMAT = "threedb-robustness-report"
REPORT_VERSION = 1


def binomial_se(p: float, n: int) -> float:
    """Standard error ``sqrt(p (1 - p) / n)`` of a proportion ``p`` measured on ``n`` examples (0 if n = 0)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else 0.0


def versions(peers: Iterable[str] = ()) -> dict[str, str]:
    """``threedb``, ``torch`` and ``python`` versions, plus those of the named peer distributions."""
    import torch

    out = {"threedb": _dist_version("threedb"), "torch": torch.__version__, "python": platform.python_version()}
    for name in peers:
        out[name] = _dist_version(name)
    return out


def _dist_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """A report table; cells are strings or finite numbers (others become strings)."""
    return {"title": title, "columns": list(columns), "rows": [[_cell(c) for c in row] for row in rows]}


def _cell(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else ""
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else str(value)
    return str(value)


def new_report(*, job: str, title: str, seed: int, device: str, config: Mapping[str, Any],
               dataset: Mapping[str, Any], model: Mapping[str, Any], headline: Mapping[str, float],
               seconds: float, examples: int, summary: Sequence[str], tables: Sequence[Mapping] = (),
               plots: Sequence[Mapping] = (), images: Sequence[Mapping] = (),
               peers: Iterable[str] = ()) -> dict[str, Any]:
    """Every key of the report format, in its documented order."""
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "job": job, "title": title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(float(seconds), 3),
        "seed": seed, "device": device, "versions": versions(peers), "config": dict(config),
        "dataset": dict(dataset), "model": dict(model),
        "headline": {k: float(v) for k, v in headline.items()},
        "tables": list(tables), "plots": list(plots), "images": list(images),
        "examples": {"file": "examples.jsonl", "count": int(examples)}, "summary": list(summary),
    }


__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "binomial_se", "new_report", "table", "versions"]
