"""Transport over real ZeroMQ sockets on 127.0.0.1: framing, timeouts, hostile peers, CURVE, keys."""
from __future__ import annotations

import argparse
import ast
import json
import logging
import pickle  # only to build a hostile payload; threedb.sim.transport must never import it
import socket
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from threedb.sim import frames, transport
from threedb.sim.errors import ThreeDBError
from threedb.sim.transport import MasterEndpoint, PeerEndpoint, TransportError, add_keys_command, generate_keys

pytestmark = pytest.mark.timeout(30)


class _Exploit:
    """Unpickling this creates ``marker`` -- proof that a receiver executed attacker-chosen code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def master():
    with MasterEndpoint() as m:
        yield m


def _roundtrip(master: MasterEndpoint, peer: PeerEndpoint, timeout: float = 5.0) -> None:
    peer.send({"type": "info", "n": 1})
    got = master.recv(timeout=timeout)
    assert got is not None, "valid message did not arrive"
    peer_id, header, _ = got
    assert header["type"] == "info" and header["n"] == 1
    master.send(peer_id, {"type": "ack"})
    reply = peer.recv(timeout=timeout)
    assert reply is not None and reply[0]["type"] == "ack"


def test_roundtrip_header_and_arrays_both_ways(master):
    assert master.address == f"tcp://127.0.0.1:{master.port}" and master.port > 0
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    depth = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    with PeerEndpoint(master.address, identity=b"worker-1") as peer:
        peer.send({"type": "push", "job": "abc", "meta": {"k": [1, 2]}}, {"rgb": image, "depth": depth})
        got = master.recv(timeout=5)
        assert got is not None
        peer_id, header, arrays = got
        assert peer_id == b"worker-1" and peer_id in master.peers
        assert header["type"] == "push" and header["job"] == "abc" and header["meta"] == {"k": [1, 2]}
        assert header["v"] == frames.PROTOCOL_VERSION
        np.testing.assert_array_equal(arrays["rgb"], image)
        np.testing.assert_array_equal(arrays["depth"], depth)
        assert arrays["depth"].dtype == np.float32

        jobs = np.array([[1, 2], [3, 4]], dtype=np.int64)
        master.send(peer_id, {"type": "pull", "batch": 2}, {"jobs": jobs})
        reply = peer.recv(timeout=5)
        assert reply is not None
        header, arrays = reply
        assert header["type"] == "pull" and header["batch"] == 2
        np.testing.assert_array_equal(arrays["jobs"], jobs)
    assert master.rejected == 0


def test_two_peers_are_told_apart(master):
    with PeerEndpoint(master.address) as a, PeerEndpoint(master.address) as b:
        a.send({"type": "info", "who": "a"})
        b.send({"type": "info", "who": "b"})
        seen = {}
        for _ in range(2):
            got = master.recv(timeout=5)
            assert got is not None
            seen[got[1]["who"]] = got[0]
        assert seen["a"] != seen["b"]
        master.send(seen["b"], {"type": "die"})
        assert b.recv(timeout=5)[0]["type"] == "die"
        assert a.recv(timeout=0.2) is None


def test_recv_timeout_returns_none_without_hanging(master):
    start = time.monotonic()
    assert master.recv(timeout=0.3) is None
    assert 0.25 <= time.monotonic() - start < 2.0
    with PeerEndpoint(master.address) as peer:
        start = time.monotonic()
        assert peer.recv(timeout=0.3) is None
        assert time.monotonic() - start < 2.0
        assert peer.recv(timeout=0) is None


def test_send_to_unknown_peer_raises(master):
    with pytest.raises(TransportError):
        master.send(b"nobody", {"type": "die"}, timeout=0.2)


def test_message_needs_a_type(master):
    with PeerEndpoint(master.address) as peer, pytest.raises(TransportError, match="type"):
        peer.send({"no_type": 1})


def test_pickle_payload_is_dropped_never_unpickled_and_master_keeps_serving(master, tmp_path, caplog):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)))
    # Sanity check of the exploit itself (in a scratch location, not the watched marker).
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Exploit(str(probe))))
    assert probe.exists()

    caplog.set_level(logging.WARNING, logger="threedb.sim.transport")
    # 1. over a ZeroMQ connection, the way 3DB's workers sent pyobj messages ...
    ctx = zmq.Context()
    attacker = ctx.socket(zmq.DEALER)
    attacker.setsockopt(zmq.LINGER, 0)
    attacker.connect(master.address)
    attacker.send(payload)
    attacker.send_multipart([payload, payload])
    # ... and framing-shaped junk: wrong version, missing type, oversized header, wrong array size.
    attacker.send(json.dumps({"v": 99, "type": "info", "arrays": []}).encode())
    attacker.send(json.dumps({"v": frames.PROTOCOL_VERSION, "arrays": []}).encode())
    attacker.send(json.dumps({"v": frames.PROTOCOL_VERSION, "type": "x" * 100_000, "arrays": []}).encode())
    attacker.send_multipart([json.dumps({"v": frames.PROTOCOL_VERSION, "type": "push", "arrays": [
        {"name": "a", "dtype": "float32", "shape": [10 ** 30, 10 ** 30]}]}).encode(), b"1234"])
    attacker.send_multipart([json.dumps({"v": frames.PROTOCOL_VERSION, "type": "push", "arrays": [
        {"name": "a", "dtype": "object", "shape": [1]}]}).encode(), payload])
    attacker.send(b"\xff\xfe garbage")
    # 2. ... and as raw bytes on the TCP port, not even speaking ZMTP.
    with socket.create_connection(("127.0.0.1", master.port), timeout=2) as raw:
        raw.sendall(payload)

    assert master.recv(timeout=1.0) is None  # every one of them is dropped
    assert master.rejected == 8  # the raw-TCP bytes never even form a message
    assert any("dropped invalid message" in r.getMessage() for r in caplog.records)

    with PeerEndpoint(master.address) as peer:
        _roundtrip(master, peer)
    # The attacker's connection is still up and still gets nothing back.
    assert attacker.poll(200) == 0
    attacker.close(0)
    ctx.term()
    assert not marker.exists()
    assert master.rejected == 8


def test_module_never_imports_an_object_deserialiser():
    tree = ast.parse(Path(transport.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
    attrs = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not attrs & {"recv_pyobj", "send_pyobj", "recv_serialized", "send_serialized"}


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "::", "192.0.2.1"])
def test_non_loopback_bind_without_keys_raises(host):
    with pytest.raises(ThreeDBError, match="threedb keys"):
        MasterEndpoint(host)
    with pytest.raises(ThreeDBError, match="threedb keys"):
        PeerEndpoint(f"tcp://{host}:5555" if ":" not in host else f"tcp://[{host}]:5555")


def test_loopback_hosts_are_recognised():
    assert transport.is_loopback("127.0.0.1") and transport.is_loopback("::1")
    assert transport.is_loopback("localhost") and transport.is_loopback("127.1.2.3")
    assert not transport.is_loopback("0.0.0.0") and not transport.is_loopback("eth0")


def test_high_water_marks_and_linger_are_set():
    with MasterEndpoint(hwm=7) as m, PeerEndpoint(m.address, hwm=9) as p:
        assert m.socket.getsockopt(zmq.SNDHWM) == 7 and m.socket.getsockopt(zmq.RCVHWM) == 7
        assert p.socket.getsockopt(zmq.SNDHWM) == 9 and p.socket.getsockopt(zmq.RCVHWM) == 9
        assert m.socket.getsockopt(zmq.LINGER) == 0 and p.socket.getsockopt(zmq.LINGER) == 0
        assert m.socket.getsockopt(zmq.MAXMSGSIZE) == transport.DEFAULT_MAX_FRAME_BYTES


def test_full_queue_send_times_out_instead_of_hanging(tmp_path):
    # A peer whose master never reads: once its queue (and the kernel buffers) fill, send times out.
    with MasterEndpoint(hwm=1) as m, PeerEndpoint(m.address, hwm=1) as p:
        blob = {"x": np.zeros(1 << 20, dtype=np.uint8)}
        start = time.monotonic()
        with pytest.raises(TransportError, match="within"):
            for _ in range(200):
                p.send({"type": "push"}, blob, timeout=0.2)
        assert time.monotonic() - start < 20


def test_close_is_idempotent_and_fast():
    m = MasterEndpoint()
    p = PeerEndpoint(m.address)
    p.send({"type": "info"})  # left unread
    start = time.monotonic()
    p.close(); p.close(); m.close(); m.close()
    assert time.monotonic() - start < 2 and m.closed and p.closed


# ------------------------------------------------------------------------------------------- CURVE

@pytest.fixture
def curve_keys(tmp_path):
    server_dir, authorised, worker_dir, stranger_dir = (tmp_path / d for d in ("server", "authorised", "w", "s"))
    server_pub, server_sec = generate_keys(server_dir, "server")
    worker_pub, worker_sec = generate_keys(worker_dir, "worker1")
    _, stranger_sec = generate_keys(stranger_dir, "stranger")
    authorised.mkdir()
    (authorised / "worker1.key").write_bytes(worker_pub.read_bytes())
    return {"server_pub": server_pub, "server_sec": server_sec, "authorised": authorised,
            "worker_sec": worker_sec, "stranger_sec": stranger_sec}


def test_curve_authorised_client_talks_unknown_client_gets_nothing(curve_keys):
    k = curve_keys
    with MasterEndpoint(server_secret_key=k["server_sec"], authorized_keys=k["authorised"]) as m:
        assert m.curve and m.socket.getsockopt(zmq.CURVE_SERVER) == 1
        with PeerEndpoint(m.address, client_secret_key=k["worker_sec"],
                          server_public_key=k["server_pub"]) as good:
            _roundtrip(m, good)
            arrays = {"img": np.ones((8, 8), np.float32)}
            good.send({"type": "push"}, arrays)
            got = m.recv(timeout=5)
            assert got is not None
            np.testing.assert_array_equal(got[2]["img"], arrays["img"])

        with PeerEndpoint(m.address, client_secret_key=k["stranger_sec"],
                          server_public_key=k["server_pub"]) as stranger:
            stranger.send({"type": "info", "who": "stranger"}, timeout=0.5)
            assert m.recv(timeout=1.0) is None
            assert stranger.recv(timeout=0.2) is None

        with PeerEndpoint(m.address) as plaintext:  # no keys at all
            try:
                plaintext.send({"type": "info", "who": "plaintext"}, timeout=0.5)
            except TransportError:
                pass   # refused so fast that the message could not even be queued: nothing got through either
            assert m.recv(timeout=0.5) is None
        assert m.rejected == 0  # refused during the handshake, before any message exists
        deadline = time.monotonic() + 5  # stranger and plaintext peer are both reported
        while m.handshake_failures < 2 and time.monotonic() < deadline:
            assert m.recv(timeout=0.1) is None
        assert m.handshake_failures >= 2


def test_curve_authorised_keys_can_be_reloaded(curve_keys, tmp_path):
    k = curve_keys
    late_pub, late_sec = generate_keys(tmp_path / "late", "late")
    with MasterEndpoint(server_secret_key=k["server_sec"], authorized_keys=k["authorised"]) as m:
        (k["authorised"] / "late.key").write_bytes(late_pub.read_bytes())
        m.reload_authorized_keys()
        with PeerEndpoint(m.address, client_secret_key=late_sec, server_public_key=k["server_pub"]) as p:
            _roundtrip(m, p)


def test_curve_key_errors_are_clear(curve_keys, tmp_path):
    k = curve_keys
    with pytest.raises(TransportError, match="both"):
        MasterEndpoint(server_secret_key=k["server_sec"])
    with pytest.raises(TransportError, match="no secret key"):
        MasterEndpoint(server_secret_key=k["server_pub"], authorized_keys=k["authorised"])
    with pytest.raises(TransportError, match="cannot read"):
        MasterEndpoint(server_secret_key=tmp_path / "missing.key_secret", authorized_keys=k["authorised"])
    with pytest.raises(TransportError, match="does not exist"):
        MasterEndpoint(server_secret_key=k["server_sec"], authorized_keys=tmp_path / "nope")


# -------------------------------------------------------------------------------------------- keys

def test_keys_command_writes_key_pair_with_private_secret(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="threedb")
    sub = parser.add_subparsers(dest="command", required=True)
    add_keys_command(sub)
    out = tmp_path / "keys" / "nested"
    args = parser.parse_args(["keys", str(out), "--name", "worker7"])
    assert args.func(args) == 0
    public, secret = out / "worker7.key", out / "worker7.key_secret"
    assert public.is_file() and secret.is_file()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not stat.S_IMODE(public.stat().st_mode) & 0o022
    assert sorted(p.name for p in out.iterdir()) == ["worker7.key", "worker7.key_secret"]  # no temp left
    pub, sec = zmq.auth.load_certificate(secret)
    assert sec is not None and zmq.auth.load_certificate(public) == (pub, None)
    assert str(secret) in capsys.readouterr().out

    with pytest.raises(ThreeDBError, match="already exists"):
        args.func(args)
    args = parser.parse_args(["keys", str(out), "--name", "worker7", "--force"])
    assert args.func(args) == 0 and zmq.auth.load_certificate(secret)[0] != pub
    assert parser.parse_args(["keys", str(out)]).name == "server"


def test_generate_keys_rejects_path_like_names(tmp_path):
    for bad in ("../evil", "", ".hidden"):
        with pytest.raises(TransportError):
            generate_keys(tmp_path, bad)
