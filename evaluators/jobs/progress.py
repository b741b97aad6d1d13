"""Progress bars and the closing human summary of a job, both on stderr (stdout stays for data)."""
from __future__ import annotations

import sys
from typing import Sequence

from tqdm import tqdm


def progress(total: int, *, desc: str, initial: int = 0, unit: str = "img") -> tqdm:
    """A tqdm bar on stderr starting at ``initial`` (the examples a resumed job already had)."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                leave=False)


def print_summary(lines: Sequence[str], *, job: str) -> None:
    """Print the summary lines on stderr, prefixed with the job name."""
    for line in lines:
        print(f"[threedb {job}] {line}", file=sys.stderr)


__all__ = ["print_summary", "progress"]
