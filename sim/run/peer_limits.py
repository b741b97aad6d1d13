"""Per-peer message budgets for the master: a flooding peer is ignored, the others keep being served.

A worker sends one request per job plus a heartbeat a second, so a few dozen messages a second at
most. A peer that sends thousands (a buggy loop, or a hostile holder of the worker key) would make the
master queue a reply to each of them; each peer gets a token bucket instead, and what exceeds it is
dropped unread and unanswered (the worker protocol re-sends requests, so a legitimate worker that
ever hit the limit only waits).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

#: Sustained messages per second a peer may send, and the burst above it.
PEER_RATE = 200.0
PEER_BURST = 400.0
#: Peers tracked at most (the least recently seen are forgotten first).
MAX_PEERS = 4096


@dataclass
class _Bucket:
    tokens: float
    last: float
    throttled: int = 0
    warned: float = float("-inf")


class PeerLimiter:
    """Token buckets keyed by peer identity; :meth:`allow` says whether to serve one more message."""

    def __init__(self, rate: float = PEER_RATE, burst: float = PEER_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[bytes, _Bucket] = {}
        self.throttled = 0   #: messages dropped, all peers together

    def allow(self, peer: bytes) -> bool:
        """Spend one token of ``peer``'s bucket; ``False`` (and counted) when it is empty."""
        now = self.clock()
        bucket = self._buckets.pop(peer, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            if len(self._buckets) >= MAX_PEERS:
                self._buckets.pop(next(iter(self._buckets)))
        self._buckets[peer] = bucket   # re-inserted: the dict's order is least recently seen first
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.last) * self.rate)
        bucket.last = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        bucket.throttled += 1
        self.throttled += 1
        if now - bucket.warned > 10.0:
            bucket.warned = now
            log.warning("peer %s sends more than %.0f messages/s: ignoring its messages (%d so far)",
                        peer.hex()[:16], self.rate, bucket.throttled)
        return False


__all__ = ["PEER_BURST", "PEER_RATE", "PeerLimiter"]
