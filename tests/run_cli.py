"""Starting `threedb run` (the real CLI entry point) for the end-to-end tests of tests/test_run_*.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def threedb(*args: str, stderr: int | None = subprocess.PIPE) -> subprocess.Popen:
    """``threedb ARGS...`` as a subprocess in its own session (so a hung one can be killed as a group)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "threedb.sim.cli", *args], stdout=subprocess.PIPE,
                            stderr=stderr, text=True, env=env, start_new_session=True)


def start_run(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``threedb run CONFIG --out OUT --lease-timeout 3 EXTRA...``."""
    return threedb("run", str(config), "--out", str(out), "--lease-timeout", "3", *extra)


def finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Wait for a started run: it must exit 0 within ``timeout`` s (else it is killed and the test fails);
    returns the JSON summary it prints last."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"run hung:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


class LiveRun:
    """A running ``threedb run`` whose stderr is collected line by line (to wait for what it reports)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """The first stderr line containing ``text``; fails if the run exits or says nothing for ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"run exited ({self.proc.returncode}) before printing {text!r}:\n{self.stderr[-3000:]}")
            time.sleep(0.1)
        pytest.fail(f"no {text!r} in the run's stderr:\n{self.stderr[-3000:]}")

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def address(self) -> str:
        return self.wait_for("master at ").split("master at ")[1].split(";")[0]

    def worker_keys(self) -> list[str]:
        """``--key SECRET --server-key PUBLIC``: the run's per-run keys, which other local workers need."""
        line = self.wait_for("master at ")
        return line.split("join with ")[1].split()

    def finish(self, timeout: float = 180) -> dict:
        """Wait for the run; its exit status must be 0; returns the JSON result it printed last."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()
            pytest.fail(f"run hung:\n{self.stderr[-3000:]}")
        self._reader.join(timeout=5)
        assert self.proc.returncode == 0, self.stderr[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()
