"""Local worker processes of ``threedb run``, started again when they die.

A worker that exits before the run ends (killed, out of memory, a crash) is respawned after a short
back-off; its leased work comes back through the master's lease timeout. A worker that keeps dying at
start-up (``MAX_QUICK_DEATHS`` times in a row, each within ``QUICK_S`` seconds of its start) is given
up; when every local worker of a role is given up the run stops with one error naming the exit code.
The restart rate is bounded: a slot waits ``0.5 * 2**deaths`` seconds (at most 8) before its next start.
"""
from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

log = logging.getLogger(__name__)

#: a worker that dies this soon after its start counts as failing at start-up
QUICK_S = 20.0
#: start-up failures in a row after which a slot is given up
MAX_QUICK_DEATHS = 3


@dataclass
class Slot:
    """One local worker: its role, its process and its restart history."""

    role: str
    start: Callable[[], subprocess.Popen]
    proc: Optional[subprocess.Popen] = None
    started: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    next_start: float = 0.0
    last_code: Optional[int] = None
    given_up: bool = False
    history: list[int] = field(default_factory=list)

    def launch(self, now: float) -> None:
        self.proc, self.started = self.start(), now


class Supervisor:
    """Starts the local workers and keeps them running; :meth:`check` says when the run must stop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots: list[Slot] = []
        self.clock = clock

    def add(self, role: str, start: Callable[[], subprocess.Popen]) -> None:
        slot = Slot(role, start)
        slot.launch(self.clock())
        self.slots.append(slot)

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self.slots)

    def check(self, roles: tuple[str, ...]) -> Optional[str]:
        """Respawn the workers that died (their back-off permitting); a reason to abort when every local
        worker of one of ``roles`` has been given up, else ``None``."""
        now = self.clock()
        for slot in self.slots:
            if slot.given_up:
                continue
            if slot.proc is not None and slot.proc.poll() is not None:
                code = slot.proc.returncode
                slot.last_code, slot.proc = code, None
                slot.history.append(code)
                lived = now - slot.started
                slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_S else 0
                if slot.quick_deaths >= MAX_QUICK_DEATHS:
                    slot.given_up = True
                    log.error("a local %s worker died %d times in a row within %.0f s of its start (last exit "
                              "code %s): not starting it again", slot.role, slot.quick_deaths, QUICK_S, code)
                    continue
                slot.next_start = now + min(0.5 * 2 ** slot.quick_deaths, 8.0)
                log.warning("a local %s worker exited (code %s) after %.1f s: starting another", slot.role,
                            code, lived)
            if slot.proc is None and now >= slot.next_start:
                slot.restarts += 1
                slot.launch(now)
        for role in roles:
            mine = [s for s in self.slots if s.role == role]
            if mine and all(s.given_up for s in mine):
                codes = sorted({s.last_code for s in mine}, key=str)
                return (f"every local {role} worker keeps exiting at start-up ({MAX_QUICK_DEATHS} times in a row "
                        f"within {QUICK_S:.0f} s; exit codes {', '.join(map(str, codes))}); its errors are above")
        return None

    def processes(self) -> list[subprocess.Popen]:
        return [s.proc for s in self.slots if s.proc is not None]


__all__ = ["MAX_QUICK_DEATHS", "QUICK_S", "Slot", "Supervisor"]
