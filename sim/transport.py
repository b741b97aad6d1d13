"""ZeroMQ transport between the master and its remote peers (render / evaluator workers).

Every message is one :mod:`threedb.sim.frames` message: a JSON header frame (with a protocol
version ``"v"`` and a message ``"type"``) followed by raw array frames. Nothing received is ever
deserialised into Python objects beyond JSON and numpy buffers of whitelisted dtypes; this module
imports no object serialiser at all (3DB's master unpickled whatever reached its port).

* :class:`MasterEndpoint` -- a ROUTER socket that binds. It learns peer identities from the
  routing frame; :meth:`MasterEndpoint.recv` returns ``(peer_id, header, arrays)`` or ``None`` on
  timeout, :meth:`MasterEndpoint.send` replies to one peer.
* :class:`PeerEndpoint` -- a DEALER socket that connects to a master.

Security: binding (or connecting) to anything but a loopback address needs CURVE keys
(``threedb keys DIR --name NAME``), unless ``insecure=True`` is passed explicitly. With CURVE the
master only accepts clients whose public key file lies in its authorised-keys directory.
Malformed messages (garbage, foreign serialisations, other protocol versions, oversized headers)
are logged, counted in :attr:`MasterEndpoint.rejected` and dropped; the endpoint keeps serving.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np
import zmq
import zmq.auth
import zmq.utils.monitor
from zmq.auth.thread import ThreadAuthenticator

from threedb.sim import frames
from threedb.sim.errors import ThreeDBError

log = logging.getLogger(__name__)

#: messages queued per peer and direction before send blocks / incoming messages wait in the kernel.
DEFAULT_HWM = 64
#: largest single frame a peer may send (an array frame); bigger ones drop the connection.
DEFAULT_MAX_FRAME_BYTES = 512 * 1024 * 1024
#: largest JSON header accepted.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
#: largest number of array frames in one message.
DEFAULT_MAX_ARRAYS = 256
#: ZMTP-level keepalive so dead TCP peers are noticed (application heartbeats are separate).
HEARTBEAT_IVL_MS = 2000
HEARTBEAT_TIMEOUT_MS = 10000
#: reconnect back-off of peers (ms), so a refused peer does not retry ten times a second forever.
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 5000
_HANDSHAKE_CODES = {
    400: "key not authorised",
    0x11000002: "security mechanism mismatch: peer without CURVE keys?",
    0x11000001: "unexpected command",
    0x20000000: "authentication handler failed",
}
#: after this many warnings about rejected messages, further ones are logged at debug level.
_MAX_REJECT_WARNINGS = 100

KEYS_HINT = ("generate CURVE keys with `threedb keys DIR --name server` on the master and "
             "`threedb keys DIR --name <worker>` on each worker, then copy each worker's <worker>.key "
             "(public) into the master's authorised-keys folder and the master's server.key to the workers")


class TransportError(ThreeDBError):
    """A transport endpoint could not be set up or a message could not be sent."""


# --------------------------------------------------------------------------------------------- keys

def generate_keys(directory: str | os.PathLike[str], name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write a CURVE key pair ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret`` (mode 0600).

    The files are written inside a private (0700) temporary folder and moved into place, so the
    secret key is never readable by others, even briefly. Returns ``(public_file, secret_file)``.
    """
    if not name or os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
        raise TransportError(f"invalid key name {name!r}: use a plain file name such as 'server'")
    directory = Path(directory)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise TransportError(f"{secret if secret.exists() else public} already exists; "
                             "choose another --name or remove the old key pair first")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".threedb-keys-", dir=directory))
    try:
        tmp_public, tmp_secret = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
        os.chmod(tmp_secret, 0o600)
        os.chmod(tmp_public, 0o644)
        os.replace(tmp_secret, secret)
        os.replace(tmp_public, public)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return public, secret


def _load_public(path: str | os.PathLike[str]) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TransportError(f"{path}: cannot read CURVE public key: {exc}; {KEYS_HINT}") from None
    return public


def _load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TransportError(f"{path}: cannot read CURVE secret key: {exc}; {KEYS_HINT}") from None
    if secret is None:
        raise TransportError(f"{path} holds no secret key (pass the .key_secret file); {KEYS_HINT}")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret key %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    return public, secret


def cmd_keys(args: argparse.Namespace) -> int:
    public, secret = generate_keys(args.dir, args.name, force=args.force)
    print(f"public key: {public}\nsecret key: {secret} (mode 0600; never copy it to another machine)")
    print("give the public key to the other side: a worker's public key goes into the master's "
          "authorised-keys folder, the master's public key to every worker")
    return 0


def add_keys_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``threedb keys DIR [--name NAME] [--force]`` to the CLI's subparsers."""
    keys = subparsers.add_parser(
        "keys", help="generate a CURVE key pair for authenticated, encrypted master/worker traffic",
        description="Write DIR/NAME.key (public) and DIR/NAME.key_secret (secret, mode 0600). "
                    "The master needs its own pair plus a folder holding the public keys of the "
                    "workers it accepts; each worker needs its own pair plus the master's public key.")
    keys.add_argument("dir", help="folder to write the key files into (created if missing)")
    keys.add_argument("--name", default="server", help="base name of the key files (default: server)")
    keys.add_argument("--force", action="store_true", help="overwrite an existing key pair of that name")
    keys.set_defaults(func=cmd_keys)
    return keys


# -------------------------------------------------------------------------------------- endpoints

def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal or ``localhost``) is a loopback address."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a host name: assume it is reachable from outside
        return False


def _tcp(host: str, port: int | str) -> str:
    if host == "localhost":
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def _split_address(address: str) -> tuple[str, int]:
    if not address.startswith("tcp://") or ":" not in address[6:]:
        raise TransportError(f"address {address!r} is not of the form tcp://HOST:PORT")
    host, _, port = address[6:].rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        raise TransportError(f"address {address!r} has no numeric port") from None


class _Endpoint:
    """What both ends share: context, socket options, framed receive with validation."""

    def __init__(self, kind: int, *, hwm: int, max_frame_bytes: int, max_header_bytes: int,
                 max_arrays: int, allowed_types: Collection[str] | None) -> None:
        if hwm < 1:
            raise TransportError(f"hwm must be at least 1, got {hwm}")
        self.max_header_bytes = max_header_bytes
        self.max_arrays = max_arrays
        self.allowed_types = frozenset(allowed_types) if allowed_types is not None else None
        self.rejected = 0  #: messages dropped because they were not valid framing
        self._context = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._monitor: zmq.Socket | None = None
        self.handshake_failures = 0  #: connections refused during the handshake (unknown key, no CURVE)
        self._closed = False
        self.socket = self._context.socket(kind)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)

    # -- validation
    def _validate(self, parts: list[bytes]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not parts:
            raise frames.FrameError("empty message")
        if len(parts[0]) > self.max_header_bytes:
            raise frames.FrameError(f"header of {len(parts[0])} bytes exceeds {self.max_header_bytes}")
        if len(parts) - 1 > self.max_arrays:
            raise frames.FrameError(f"{len(parts) - 1} array frames exceed {self.max_arrays}")
        try:
            header, arrays = frames.decode(parts)
        except frames.FrameError:
            raise
        except Exception as exc:  # e.g. absurd shapes or deeply nested JSON: still just a bad message
            raise frames.FrameError(f"undecodable message: {type(exc).__name__}: {exc}") from None
        kind = header.get("type")
        if not isinstance(kind, str) or not kind:
            raise frames.FrameError(f"header has no message type: {kind!r}")
        if self.allowed_types is not None and kind not in self.allowed_types:
            raise frames.FrameError(f"unknown message type {kind!r}")
        return header, arrays

    def _reject(self, source: str, reason: object) -> None:
        self.rejected += 1
        level = logging.WARNING if self.rejected <= _MAX_REJECT_WARNINGS else logging.DEBUG
        log.log(level, "dropped invalid message from %s (%s); %d dropped so far",
                source, str(reason)[:200], self.rejected)

    def _encode(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None) -> list[bytes]:
        kind = header.get("type")
        if not isinstance(kind, str) or not kind:
            raise TransportError(f"message header needs a non-empty string 'type', got {kind!r}")
        try:
            return frames.encode(header, arrays)
        except (TypeError, ValueError) as exc:  # FrameError is a ValueError
            raise TransportError(f"cannot encode {kind!r} message: {exc}") from None

    def _send_parts(self, parts: list[bytes], timeout: float, what: str) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                self.socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportError(f"could not send to {what} within {timeout:g} s "
                                         "(queue full or peer not connected)") from None
                self.socket.poll(min(remaining, 0.05) * 1000, zmq.POLLOUT)
                time.sleep(min(remaining, 0.005))
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    raise TransportError(f"{what} is not connected") from None
                raise TransportError(f"sending to {what} failed: {exc}") from None

    def _watch_handshakes(self) -> None:
        """Report refused handshakes (ZeroMQ itself only drops them silently)."""
        events = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self._monitor = self.socket.get_monitor_socket(events)
        self._monitor.setsockopt(zmq.LINGER, 0)
        self._monitor.setsockopt(zmq.RCVHWM, 1000)

    def _drain_monitor(self) -> None:
        if self._monitor is None:
            return
        for _ in range(1000):  # bounded
            try:
                parts = self._monitor.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handshake_failures += 1
            try:
                event = zmq.utils.monitor.parse_monitor_message(parts)
                code = event["value"]
                detail = (f"{zmq.Event(event['event']).name} on {event['endpoint'].decode(errors='replace')}"
                          f" ({_HANDSHAKE_CODES.get(code, f'code {code:#x}')})")
            except Exception:  # pragma: no cover - malformed monitor frame
                detail = "unparsable monitor event"
            level = logging.WARNING if self.handshake_failures <= _MAX_REJECT_WARNINGS else logging.DEBUG
            log.log(level, "refused a connection at the handshake: %s; is the peer's public key in the "
                    "authorised-keys folder and does it use this master's public key? (%d so far)",
                    detail, self.handshake_failures)

    def _recv_parts(self, timeout: float) -> list[bytes] | None:
        """One raw multipart message, or None if none arrives before ``timeout`` seconds."""
        self._drain_monitor()
        if self._monitor is None:
            ready = self.socket.poll(max(timeout, 0.0) * 1000, zmq.POLLIN)
        else:
            poller = zmq.Poller()
            poller.register(self.socket, zmq.POLLIN)
            poller.register(self._monitor, zmq.POLLIN)
            deadline = time.monotonic() + max(timeout, 0.0)
            while True:
                events = dict(poller.poll(max(deadline - time.monotonic(), 0.0) * 1000))
                if self._monitor in events:
                    self._drain_monitor()
                ready = self.socket in events
                if ready or time.monotonic() >= deadline:
                    break
        if not ready:
            return None
        try:
            return self.socket.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return None

    # -- lifetime
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._monitor is not None:
            try:
                self.socket.disable_monitor()
            except zmq.ZMQError:  # pragma: no cover
                pass
            self._monitor.close(linger=0)
        self.socket.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._context.term()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class MasterEndpoint(_Endpoint):
    """ROUTER socket bound to ``tcp://HOST:PORT`` (default ``127.0.0.1``, ephemeral port).

    ``server_secret_key`` (a ``.key_secret`` file) and ``authorized_keys`` (a folder of clients'
    ``.key`` public files) enable CURVE: traffic is encrypted and only listed clients get through.
    A non-loopback ``host`` without them raises :class:`TransportError` unless ``insecure=True``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 server_secret_key: str | os.PathLike[str] | None = None,
                 authorized_keys: str | os.PathLike[str] | None = None,
                 insecure: bool = False, hwm: int = DEFAULT_HWM,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                 max_arrays: int = DEFAULT_MAX_ARRAYS,
                 allowed_types: Collection[str] | None = None) -> None:
        if (server_secret_key is None) != (authorized_keys is None):
            raise TransportError("CURVE needs both server_secret_key (the master's .key_secret file) "
                                 "and authorized_keys (folder of accepted workers' .key files)")
        self.curve = server_secret_key is not None
        if not self.curve and not is_loopback(host):
            if not insecure:
                raise TransportError(
                    f"refusing to bind {host!r} without CURVE keys: anyone who can reach that address "
                    f"could talk to the master. Bind 127.0.0.1 (the default), or {KEYS_HINT}; "
                    "pass insecure=True only on a network you fully trust")
            log.warning("master bound to %s WITHOUT authentication or encryption (insecure=True)", host)
        if self.curve:  # read keys before creating sockets so errors leave nothing behind
            public, secret = _load_secret(server_secret_key)  # type: ignore[arg-type]
            key_dir = Path(authorized_keys)  # type: ignore[arg-type]
            if not key_dir.is_dir():
                raise TransportError(f"authorised-keys folder {key_dir} does not exist; {KEYS_HINT}")
            if not list(key_dir.glob("*.key")):
                log.warning("authorised-keys folder %s holds no *.key file: no worker can connect", key_dir)
        super().__init__(zmq.ROUTER, hwm=hwm, max_frame_bytes=max_frame_bytes,
                         max_header_bytes=max_header_bytes, max_arrays=max_arrays,
                         allowed_types=allowed_types)
        self.authorized_keys = Path(authorized_keys) if authorized_keys is not None else None
        self.peers: set[bytes] = set()  #: identities that sent at least one valid message
        try:
            self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown peer -> error, not silent drop
            if self.curve:
                self._auth = ThreadAuthenticator(self._context, log=log.getChild("auth"))
                self._auth.start()
                self._auth.configure_curve(domain="*", location=str(self.authorized_keys))
                self.socket.curve_secretkey = secret
                self.socket.curve_publickey = public
                self.socket.curve_server = True
                self._watch_handshakes()
            self.socket.bind(_tcp(host, "*" if port == 0 else port))
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(f"cannot bind {_tcp(host, port)}: {exc}") from None
        except BaseException:
            self.close()
            raise
        self.address: str = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.host, self.port = _split_address(self.address)
        log.info("master listening on %s%s", self.address, " (CURVE)" if self.curve else "")

    def reload_authorized_keys(self) -> None:
        """Re-read the authorised-keys folder (after a worker's public key was added or removed)."""
        if self._auth is None or self.authorized_keys is None:
            raise TransportError("this master does not use CURVE keys")
        self._auth.configure_curve(domain="*", location=str(self.authorized_keys))

    def recv(self, timeout: float = 1.0) -> tuple[bytes, dict[str, Any], dict[str, np.ndarray]] | None:
        """Next valid message as ``(peer_id, header, arrays)``, or None after ``timeout`` seconds.

        Invalid messages met on the way are logged, counted in :attr:`rejected` and dropped.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            parts = self._recv_parts(deadline - time.monotonic())
            if parts is None:
                return None
            peer, payload = parts[0], parts[1:]
            try:
                header, arrays = self._validate(payload)
            except frames.FrameError as exc:
                self._reject(f"peer {peer.hex()}", exc)
            else:
                self.peers.add(peer)
                return peer, header, arrays
            if time.monotonic() >= deadline:
                return None

    def send(self, peer_id: bytes, header: Mapping[str, Any],
             arrays: Mapping[str, np.ndarray] | None = None, *, timeout: float = 5.0) -> None:
        """Send a message to ``peer_id``; raises :class:`TransportError` if it is gone or its queue
        stays full for ``timeout`` seconds."""
        parts = self._encode(header, arrays)
        self._send_parts([bytes(peer_id)] + parts, timeout, f"peer {bytes(peer_id).hex()}")


class PeerEndpoint(_Endpoint):
    """DEALER socket connected to a master at ``tcp://HOST:PORT``.

    For a CURVE master pass ``client_secret_key`` (this peer's ``.key_secret``, whose public half
    must be in the master's authorised-keys folder) and ``server_public_key`` (the master's ``.key``).
    A non-loopback address without them raises unless ``insecure=True``. ``identity`` sets the
    routing id the master sees (1-255 bytes, first byte non-zero); by default ZeroMQ picks one.
    """

    def __init__(self, address: str, *, client_secret_key: str | os.PathLike[str] | None = None,
                 server_public_key: str | os.PathLike[str] | None = None, insecure: bool = False,
                 identity: bytes | None = None, hwm: int = DEFAULT_HWM,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                 max_arrays: int = DEFAULT_MAX_ARRAYS,
                 allowed_types: Collection[str] | None = None) -> None:
        host, _ = _split_address(address)
        if (client_secret_key is None) != (server_public_key is None):
            raise TransportError("CURVE needs both client_secret_key (this worker's .key_secret file) "
                                 "and server_public_key (the master's .key file)")
        self.curve = client_secret_key is not None
        if not self.curve and not is_loopback(host):
            if not insecure:
                raise TransportError(f"refusing to connect to {address} without CURVE keys; {KEYS_HINT}; "
                                     "pass insecure=True only on a network you fully trust")
            log.warning("connecting to %s WITHOUT authentication or encryption (insecure=True)", address)
        if identity is not None and not (1 <= len(identity) <= 255 and identity[0] != 0):
            raise TransportError("identity must be 1-255 bytes and must not start with a zero byte")
        if self.curve:
            public, secret = _load_secret(client_secret_key)  # type: ignore[arg-type]
            server = _load_public(server_public_key)  # type: ignore[arg-type]
        super().__init__(zmq.DEALER, hwm=hwm, max_frame_bytes=max_frame_bytes,
                         max_header_bytes=max_header_bytes, max_arrays=max_arrays,
                         allowed_types=allowed_types)
        self.address = address
        try:
            self.socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
            self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
            if identity is not None:
                self.socket.setsockopt(zmq.ROUTING_ID, identity)
            if self.curve:
                self.socket.curve_secretkey = secret
                self.socket.curve_publickey = public
                self.socket.curve_serverkey = server
            self.socket.connect(address)
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(f"cannot connect to {address}: {exc}") from None

    def recv(self, timeout: float = 1.0) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """Next valid message from the master as ``(header, arrays)``, or None after ``timeout`` s."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            parts = self._recv_parts(deadline - time.monotonic())
            if parts is None:
                return None
            try:
                return self._validate(parts)
            except frames.FrameError as exc:
                self._reject(f"master {self.address}", exc)
            if time.monotonic() >= deadline:
                return None

    def send(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
             *, timeout: float = 5.0) -> None:
        """Send a message to the master; raises :class:`TransportError` if the outgoing queue stays
        full for ``timeout`` seconds."""
        self._send_parts(self._encode(header, arrays), timeout, f"master {self.address}")
