"""What render and evaluator workers share: the connection, the hello, heartbeats while busy."""
from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import socket
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from threedb.sim.transport import PeerEndpoint

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
#: a worker exits when the master has not answered for this long (the master died).
MASTER_TIMEOUT_S = 60.0


class MasterGone(Exception):
    """The master did not answer for MASTER_TIMEOUT_S, or told the worker to stop."""


def add_connect_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", required=True, metavar="tcp://HOST:PORT", help="the master's address")
    parser.add_argument("--key", metavar="FILE", help="this worker's CURVE secret key (.key_secret)")
    parser.add_argument("--server-key", metavar="FILE", help="the master's CURVE public key (.key)")
    parser.add_argument("--insecure", action="store_true",
                        help="connect to a non-loopback address without CURVE keys (trusted networks only)")
    parser.add_argument("--master-timeout", type=float, default=MASTER_TIMEOUT_S,
                        help=f"exit when the master is silent this long (default {MASTER_TIMEOUT_S:.0f} s)")


class Connection:
    """A worker's link to the master: a PeerEndpoint plus request/reply helpers with heartbeats."""

    def __init__(self, args: argparse.Namespace, role: str) -> None:
        self.role = role
        self.wid = f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.seq = 0
        self.master_timeout = float(getattr(args, "master_timeout", MASTER_TIMEOUT_S))
        self.endpoint = PeerEndpoint(args.connect, client_secret_key=args.key, server_public_key=args.server_key,
                                     insecure=bool(getattr(args, "insecure", False)))

    def send(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> None:
        self.endpoint.send({**header, "wid": self.wid, "role": self.role}, arrays, timeout=self.master_timeout)

    def request(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
                *, expect: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send ``header`` and wait for a reply of a type in ``expect`` (``die`` raises MasterGone).

        The request is re-sent every few seconds while no reply comes (it may have been queued before
        the master bound its port); the master answers requests idempotently.
        """
        self.seq += 1
        header = {**header, "seq": self.seq}
        deadline = time.monotonic() + self.master_timeout
        self.send(header, arrays)
        last = time.monotonic()
        while time.monotonic() < deadline:
            got = self.endpoint.recv(timeout=0.5)
            if got is None:
                if time.monotonic() - last > 5.0 and not arrays:
                    self.send(header)
                    last = time.monotonic()
                continue
            reply, reply_arrays = got
            if reply.get("type") == "die":
                raise MasterGone("the master asked this worker to stop")
            if reply.get("type") in expect and reply.get("seq") in (None, self.seq):
                return reply, reply_arrays
            log.debug("ignoring unexpected %s message", reply.get("type"))
        raise MasterGone(f"no answer from the master for {self.master_timeout:.0f} s")

    def busy(self, fn: Callable[[], Any], **info: Any) -> Any:
        """Run ``fn`` in a thread; heartbeat the master every second meanwhile. Returns fn's result."""
        pool = concurrent.futures.ThreadPoolExecutor(1)
        future = pool.submit(fn)
        try:
            while True:
                try:
                    return future.result(timeout=HEARTBEAT_S)
                except concurrent.futures.TimeoutError:
                    self.send({"type": "heartbeat", **info})
                    got = self.endpoint.recv(timeout=0)
                    if got is not None and got[0].get("type") == "die":
                        raise MasterGone("the master asked this worker to stop") from None
        finally:
            pool.shutdown(wait=False)

    def close(self) -> None:
        try:
            self.endpoint.send({"type": "bye", "wid": self.wid, "role": self.role}, timeout=0.5)
        except Exception:
            pass
        self.endpoint.close()


def worker_main(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None) -> int:
    """Entry point of a worker module (``python -m threedb.sim.run.<kind>_worker``)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
