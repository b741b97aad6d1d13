"""``threedb run --cluster ray[...]``: render and evaluator workers started and supervised by Ray.

Ray only places and supervises: each worker is a Ray task that runs ``threedb worker`` (or
``threedb evaluator``) as a child process on its node, which connects to the master over the usual
CURVE-authenticated ZeroMQ protocol. Blender stays in its own spawned process, as on one machine. The
per-run keys travel as task arguments through Ray (never in a file outside a private temporary folder
on the worker's node, removed when the task ends).

* Placement: render workers are spread over the nodes (``SPREAD``); evaluators prefer the master's
  node, since every frame goes render worker -> master -> evaluator (``docs/scaling.md`` shows the
  relay is not the limit), so the evaluators are what must be near the frames.
* Counts: a number, or ``auto`` for as many as the cluster's alive nodes have room for, re-checked
  while the run goes on so that nodes joining later get workers.
* Lost workers: a task that ends while the run goes on (its node died, it crashed, or the worker
  exited) is started again, within the alive nodes' room; the jobs it held come back through the
  master's lease timeout, so every job is still logged exactly once.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from threedb.sim.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
#: seconds between two looks at the cluster's size (for ``auto`` counts)
RESCAN_S = 2.0
#: a slot whose tasks end this many times in a row, each within ``QUICK_S`` of its start, is given up
MAX_QUICK_DEATHS = 3
QUICK_S = 20.0

MODULES = {"render": "threedb.sim.run.render_worker", "evaluator": "threedb.sim.run.evaluator_worker"}


def parse_cluster(value: str) -> str:
    """The ``ray.init`` address of ``--cluster``: ``ray`` (the cluster this machine belongs to, or
    ``RAY_ADDRESS``), ``ray:HOST:PORT`` (a head's GCS address) or ``ray://HOST:PORT`` (Ray Client)."""
    if value == "ray":
        return os.environ.get("RAY_ADDRESS", "auto")
    if value.startswith("ray://"):
        return value
    if value.startswith("ray:") and value[4:]:
        return value[4:]
    raise ConfigError(f"--cluster {value!r}: expected ray, ray:HOST:PORT or ray://HOST:PORT")


def parse_count(value: str) -> Union[int, str]:
    """A worker count: a non-negative integer or ``auto``."""
    if value == AUTO:
        return AUTO
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"worker count {value!r}: expected a number or auto") from None
    if count < 0:
        raise ConfigError(f"worker count {value!r}: expected a number >= 0 or auto")
    return count


def connect(ray_address: str) -> str:
    """Join the Ray cluster (once per process); the IP address of this node, which the master binds."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False, configure_logging=False)
    return ray.util.get_node_ip_address()


def cluster_gpus() -> float:
    """GPUs on the cluster's alive nodes."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def run_worker(role: str, address: str, worker_secret: bytes, master_public: bytes, extra: list[str]) -> int:
    """Body of one worker task, on its Ray node: write the keys privately, run the worker, return its
    exit code. Cancelling the task (the run ended) stops the worker."""
    with tempfile.TemporaryDirectory(prefix="threedb-ray-keys-") as folder:   # mode 0700
        secret, public = Path(folder) / "worker.key_secret", Path(folder) / "master.key"
        for path, data in ((secret, worker_secret), (public, master_public)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        proc = subprocess.Popen([sys.executable, "-m", MODULES[role], "--connect", address, "--key", str(secret),
                                 "--server-key", str(public), *extra], stdin=subprocess.DEVNULL)
        try:
            return proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass(frozen=True)
class Resources:
    """What one worker of a role asks Ray for."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class RaySlot:
    """One worker place: the task now running in it and its history."""

    role: str
    ref: Any = None
    started: float = 0.0
    quick_deaths: int = 0
    given_up: bool = False
    history: list[str] = field(default_factory=list)


class RayWorkers:
    """Starts ``render`` and ``evaluator`` workers as Ray tasks and keeps the wanted number running; the
    same interface as :class:`~threedb.sim.run.supervisor.Supervisor` for the master's ``alive`` check."""

    def __init__(self, ray_address: str, master_address: str, worker_secret: bytes, master_public: bytes,
                 counts: dict[str, Union[int, str]], resources: dict[str, Resources],
                 extra: Optional[dict[str, list[str]]] = None) -> None:
        import ray

        self.ray = ray
        connect(ray_address)
        self.master_address = master_address
        self.keys = (worker_secret, master_public)
        self.counts, self.resources, self.extra = counts, resources, extra or {}
        self.slots: list[RaySlot] = []
        self.failing: set[str] = set()   # roles whose workers keep dying at start-up: not started again
        self.restarts = 0
        self._next_scan = 0.0
        self._remote = ray.remote(max_retries=0)(run_worker)
        self._driver_node = ray.get_runtime_context().get_node_id()
        self._scale(time.monotonic())

    # -- sizing -------------------------------------------------------------------------------------
    def _room(self, role: str) -> int:
        """How many workers of ``role`` the alive nodes hold, beside the fixed-count roles' workers."""
        need = self.resources[role]
        total_cpu = total_gpu = 0.0
        for node in self.ray.nodes():
            if node.get("Alive"):
                total_cpu += node["Resources"].get("CPU", 0.0)
                total_gpu += node["Resources"].get("GPU", 0.0)
        for other, count in self.counts.items():
            if other != role and count != AUTO:
                total_cpu -= count * self.resources[other].cpus
                total_gpu -= count * self.resources[other].gpus
        fits = int(total_cpu // need.cpus) if need.cpus > 0 else 1 << 20
        if need.gpus > 0:
            fits = min(fits, int(total_gpu // need.gpus))
        return max(fits, 0)

    def wanted(self, role: str) -> int:
        count = self.counts.get(role, 0)
        return self._room(role) if count == AUTO else int(count)

    def _scale(self, now: float) -> None:
        for role, count in self.counts.items():
            if role in self.failing:
                continue
            mine = [s for s in self.slots if s.role == role and (count != AUTO or not s.given_up)]
            for _ in range(self.wanted(role) - len(mine)):   # a fixed count never replaces a given-up place
                slot = RaySlot(role)
                self.slots.append(slot)
                self._launch(slot, now)
        self._next_scan = now + RESCAN_S

    # -- tasks --------------------------------------------------------------------------------------
    def _options(self, role: str) -> dict[str, Any]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        need = self.resources[role]
        options: dict[str, Any] = {"num_cpus": need.cpus, "num_gpus": need.gpus}
        if role == "evaluator":   # near the master, which relays every frame
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self._driver_node, soft=True)
        else:
            options["scheduling_strategy"] = "SPREAD"
        return options

    def _launch(self, slot: RaySlot, now: float) -> None:
        slot.ref = self._remote.options(**self._options(slot.role)).remote(
            slot.role, self.master_address, *self.keys, self.extra.get(slot.role, []))
        slot.started = now

    def _outcome(self, ref: Any) -> str:
        try:
            return f"exit code {self.ray.get(ref)}"
        except Exception as exc:   # node died, worker crashed, task cancelled: all mean "gone"
            return type(exc).__name__

    def check(self, roles: tuple[str, ...]) -> Optional[str]:
        """Start again the workers whose task ended, grow ``auto`` counts; a reason to abort when every
        slot of one of ``roles`` has been given up, else ``None``."""
        now = time.monotonic()
        running = [s for s in self.slots if s.ref is not None]
        if running:
            done, _ = self.ray.wait([s.ref for s in running], num_returns=len(running), timeout=0)
            finished = set(done)
            for slot in running:
                if slot.ref not in finished:
                    continue
                outcome = self._outcome(slot.ref)
                slot.ref = None
                slot.history.append(outcome)
                slot.quick_deaths = slot.quick_deaths + 1 if now - slot.started < QUICK_S else 0
                if slot.quick_deaths >= MAX_QUICK_DEATHS:
                    slot.given_up = True
                    self.failing.add(slot.role)
                    log.error("a Ray %s worker ended %d times in a row within %.0f s of its start (%s): not "
                              "starting it again", slot.role, slot.quick_deaths, QUICK_S, outcome)
                    continue
                live = sum(1 for s in self.slots if s.role == slot.role and not s.given_up and s.ref is not None)
                if live >= self.wanted(slot.role):   # its node is gone and the rest are full: drop the place
                    slot.given_up = True
                    continue
                log.warning("a Ray %s worker ended (%s): starting another", slot.role, outcome)
                self.restarts += 1
                self._launch(slot, now)
        if now >= self._next_scan:
            self._scale(now)
        for role in roles:
            slots = [s for s in self.slots if s.role == role]
            if slots and all(s.given_up for s in slots):
                last = next((s.history[-1] for s in reversed(slots) if s.history), "never started")
                return (f"every Ray {role} worker was given up (the last one ended with {last}); see the Ray "
                        "workers' logs (ray logs) for why")
        return None

    def processes(self) -> list[subprocess.Popen]:
        """No local processes: Ray holds them."""
        return []

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the workers to leave (the master said goodbye), cancel the rest, leave the cluster."""
        refs = [s.ref for s in self.slots if s.ref is not None]
        if refs:
            _, pending = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
            for ref in pending:
                self.ray.cancel(ref, force=True)
        self.ray.shutdown()


__all__ = ["AUTO", "RayWorkers", "Resources", "cluster_gpus", "connect", "parse_cluster", "parse_count", "run_worker"]
