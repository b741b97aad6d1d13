"""The one error type of datasets: what is wrong and in which file."""
from __future__ import annotations

from pathlib import Path

from threedb.sim.errors import ThreeDBError


class DatasetError(ThreeDBError):
    """A dataset (or the run directory it is exported from) is missing a file or holds a bad value.

    The message starts with the offending file (and line, where there is one), e.g.
    ``out/samples.jsonl:3: label 7 is outside the class list (0..1)``.
    """

    def __init__(self, path: str | Path, message: str, *, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
