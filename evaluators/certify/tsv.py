"""Cohen et al.'s certification log: a TSV ``idx label predict radius correct time`` (``predict = -1``
abstains), written as their ``code/certify.py`` writes it and read back (theirs and ours).

Their format: ``"{}\\t{}\\t{}\\t{:.3}\\t{}\\t{}".format(idx, label, prediction, radius, correct, time)``
with ``time = str(datetime.timedelta(seconds=...))``; ``{:.3}`` is **three significant digits**
(``0.378``, ``0.0125``, ``1.86``, ``0.0``). Their published CIFAR-10 logs hold the time in seconds
instead (``15.4``): both are read.
"""
from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from threedb.sim.errors import ThreeDBError

HEADER = ("idx", "label", "predict", "radius", "correct", "time")
#: The columns a log must have (``time`` is read when present).
REQUIRED = HEADER[:5]
_TIMEDELTA = re.compile(r"^(?:(?P<days>-?\d+) days?, )?(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)$")


class LogError(ThreeDBError):
    """A certification log cannot be read; the message names the file and line."""


def floor_significant(value: float, digits: int = 3) -> float:
    """``value`` rounded **down** to ``digits`` significant digits (0.24996 -> 0.249, not 0.25), so a
    radius read back from the log never claims more than was certified."""
    if value <= 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(value)))
    floored = math.floor(value * scale) / scale
    return floored if floored <= value else math.floor(value * scale - 1) / scale  # guard float round-up


def format_row(idx: int, label: int, predict: int, radius: float, correct: int, seconds: float) -> str:
    """One line of the log in Cohen et al.'s ``certify.py`` format (with its newline); the radius is
    rounded down rather than to nearest (:func:`floor_significant`)."""
    elapsed = str(datetime.timedelta(seconds=seconds))
    return f"{idx}\t{label}\t{predict}\t{floor_significant(radius):.3}\t{correct}\t{elapsed}\n"


def header_line() -> str:
    return "\t".join(HEADER) + "\n"


def rows_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """The log lines (no header) of certify rows (``dataset_index``, ``label``, ``prediction``, ``radius``,
    ``correct``, ``time``)."""
    return "".join(format_row(int(r["dataset_index"]), int(r["label"]), int(r["prediction"]), float(r["radius"]),
                              int(bool(r["correct"])), float(r["time"])) for r in rows)


def parse_time(text: str) -> float:
    """Seconds from ``15.4`` or ``0:02:32.717239`` (``str(timedelta)``, with ``N days, `` when long)."""
    try:
        value = float(text)
    except ValueError:
        match = _TIMEDELTA.match(text)
        if match is None:
            raise ValueError(f"not a time (seconds, or H:MM:SS[.ffffff]): {text!r}") from None
        value = (int(match["days"] or 0) * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60
                 + float(match["s"]))
    if not math.isfinite(value):
        raise ValueError(f"not a finite time: {text!r}")
    return value


@dataclass(frozen=True)
class LogRow:
    idx: int
    label: int
    predict: int
    radius: float
    correct: bool
    time: float | None


def _int(text: str, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"column {column!r} must be an integer, got {text!r}") from None


def read_log(path: str | Path) -> list[LogRow]:
    """The rows of a TSV log; :class:`LogError` names the file and line of the first problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LogError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LogError(f"{path}: cannot read it as text: {exc}") from None
    if not lines or not lines[0].strip():
        raise LogError(f"{path}:1: empty log; expected the header {' '.join(HEADER)} (tab-separated)")
    columns = lines[0].rstrip("\r").split("\t")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise LogError(f"{path}:1: the header lacks column(s) {', '.join(missing)}; expected the tab-separated "
                       f"header {' '.join(HEADER)} (Cohen et al.'s certify.py), got {columns}")
    where = {c: columns.index(c) for c in HEADER if c in columns}
    rows: list[LogRow] = []
    for number, line in enumerate(lines[1:], 2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(columns):
            raise LogError(f"{path}:{number}: {len(cells)} tab-separated values, the header has {len(columns)}")
        try:
            cell = {c: cells[i] for c, i in where.items()}
            radius = float(cell["radius"])
            if not math.isfinite(radius) or radius < 0:
                raise ValueError(f"column 'radius' must be a finite number >= 0, got {cell['radius']!r}")
            correct = _int(cell["correct"], "correct")
            if correct not in (0, 1):
                raise ValueError(f"column 'correct' must be 0 or 1, got {cell['correct']!r}")
            rows.append(LogRow(_int(cell["idx"], "idx"), _int(cell["label"], "label"),
                               _int(cell["predict"], "predict"), radius, bool(correct),
                               parse_time(cell["time"]) if "time" in cell else None))
        except ValueError as exc:
            text = str(exc)
            if text.startswith("could not convert"):
                text = f"column 'radius' must be a number, got {cell['radius']!r}"
            raise LogError(f"{path}:{number}: {text}") from None
    return rows


__all__ = ["HEADER", "LogError", "LogRow", "floor_significant", "format_row", "header_line", "parse_time", "read_log", "rows_text"]
