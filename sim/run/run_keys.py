"""Per-run CURVE keys: how the local workers of ``threedb run`` authenticate on loopback.

Without them any local user's process could join a run, take jobs, return forged images or outputs,
send ``fatal`` or read the welcome (the config and paths). The master spawns its workers, so it makes a
fresh key pair for itself and one for them in a private folder (0700, secrets 0600) and accepts only
the workers' key: a peer without it never completes the CURVE handshake and gets nothing. The folder
is removed when the run ends. ``--no-local-auth`` turns this off.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from threedb.sim.transport import generate_keys


@dataclass(frozen=True)
class RunKeys:
    folder: Path
    master_public: Path
    master_secret: Path
    worker_public: Path
    worker_secret: Path

    @property
    def authorized(self) -> Path:
        """The folder of accepted public keys (the workers' only)."""
        return self.worker_public.parent

    @classmethod
    def create(cls) -> "RunKeys":
        folder = Path(tempfile.mkdtemp(prefix="threedb-run-keys-"))   # mode 0700
        master_public, master_secret = generate_keys(folder / "master", "master")
        worker_public, worker_secret = generate_keys(folder / "workers", "worker")
        return cls(folder, master_public, master_secret, worker_public, worker_secret)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["RunKeys"]
