"""Every message a worker sends has a schema (sim/run/messages.py); a live master drops what breaks it
and keeps serving (issue 16: the messages that crashed it, and a seeded fuzzer on loopback)."""
from __future__ import annotations

import copy
import random
import re
import time

import numpy as np
import pytest
from run_cli import LiveRun, start_run
from test_run import write_config

from threedb.sim.frames import encode
from threedb.sim.run.messages import MessageError, parse
from threedb.sim.transport import PeerEndpoint

RESOLUTION = (32, 32)
RGB = np.zeros((32, 32, 3), np.uint8)
MASK = np.zeros((32, 32), bool)

#: the issue's cases: each was one message that ended the run with a traceback
CRASHERS = [
    {"type": "outputs", "wid": "e", "role": "evaluator", "results": 5},
    {"type": "outputs", "wid": "e", "role": "evaluator", "results": ["x"]},
    {"type": "ready", "wid": "e", "role": "evaluator", "batch_size": "abc"},
    {"type": "eval_failed", "wid": "e", "role": "evaluator", "job_ids": 5},
]


@pytest.mark.parametrize("header", CRASHERS, ids=["results-5", "results-x", "batch_size-abc", "job_ids-5"])
def test_the_messages_that_crashed_the_master_are_refused_by_their_schema(header):
    with pytest.raises(MessageError):
        parse(dict(header, v=1), {}, resolution=RESOLUTION, passes=["mask"])


@pytest.mark.parametrize("arrays, reason", [
    ({"rgb": np.zeros(0)}, "rgb"),                                          # float64 of shape [0]
    ({"rgb": RGB.astype(np.float64), "mask": MASK}, "uint8"),
    ({"rgb": RGB[:16], "mask": MASK}, r"\[32, 32, 3\]"),
    ({"mask": MASK}, "must include 'rgb'"),
    ({"rgb": RGB, "mask": MASK, "depth": MASK.astype(np.float32)}, "too"),   # a pass not asked for
    ({"rgb": RGB, "mask": MASK.astype(np.uint8)}, "bool"),
])
def test_render_arrays_have_the_documented_names_dtypes_and_shapes(arrays, reason):
    header = {"v": 1, "type": "result", "wid": "r", "role": "render", "job_id": "j", "meta": {}}
    with pytest.raises(MessageError, match=reason):
        parse(header, arrays, resolution=RESOLUTION, passes=["mask"])
    assert parse(header, {"rgb": RGB, "mask": MASK}, resolution=RESOLUTION, passes=["mask"]).job_id == "j"
    assert parse(header, {"rgb": RGB}, resolution=RESOLUTION, passes=["mask"]).job_id == "j"   # not rendered


def test_headers_are_typed_and_closed():
    ok = {"v": 1, "type": "failed", "wid": "r", "role": "render", "job_id": "j", "error": "boom"}
    assert parse(ok, {}, resolution=RESOLUTION, passes=[]).error == "boom"
    for bad in ({"meta": 5, "type": "result"}, {"job_id": 5}, {"job_id": ""}, {"seq": "1"}, {"extra": 1},
                {"role": "evaluator"}, {"type": "nope"}, {"wid": ["x"]}, {"v": 2}, {"error": 3}):
        with pytest.raises(MessageError):
            parse({**ok, **bad}, {"rgb": RGB} if bad.get("type") == "result" else {}, resolution=RESOLUTION,
                  passes=[])


TEMPLATES = [
    ({"type": "hello"}, "render"), ({"type": "ready"}, "render"), ({"type": "heartbeat", "job_id": "j"}, "render"),
    ({"type": "result", "job_id": "city-mug-p000000", "meta": {}}, "render"),
    ({"type": "failed", "job_id": "city-mug-p000001", "error": "x"}, "render"),
    ({"type": "ready", "batch_size": 4}, "evaluator"),
    ({"type": "outputs", "results": [{"job_id": "city-mug-p000000", "outputs": {"is_correct": True}}]}, "evaluator"),
    ({"type": "eval_failed", "job_ids": ["city-duck-p000000"], "error": "x"}, "evaluator"),
]
ODD_VALUES = [5, -1, 2 ** 70, 1.5, float("inf"), "", "abc", "x" * 300, None, True, [], ["x"], [5], {}, {"a": 1},
              [{"job_id": 5}], [{}]]


def mutate(rng: random.Random, header: dict) -> dict:
    """A template with one to three fields replaced, dropped or added (never a ``fatal``: an unauthenticated
    peer's well-formed ``fatal`` is the authentication item's business, not the schema's)."""
    out = copy.deepcopy(header)
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        key = rng.choice(list(out) + ["batch_size", "results", "job_ids", "meta", "seq", "extra"])
        if action < 0.7:
            out[key] = rng.choice(ODD_VALUES)
        elif key in out and key not in ("type", "wid", "role"):
            del out[key]
    if out.get("type") == "fatal":
        out["type"] = "ready"
    return out


def breaks_the_protocol(header: dict, arrays: dict) -> bool:
    try:
        parse(dict(header, v=1), arrays, resolution=RESOLUTION, passes=["mask"])
    except MessageError:
        return True
    return False


def hostile_messages(seed: int, n: int) -> list[tuple[dict, dict]]:
    """The issue's cases and ``n`` seeded mutations of well-formed messages that break the protocol (a
    well-formed one from a stranger, which could take a job and go silent, is the authentication item's)."""
    rng = random.Random(seed)
    out = [(dict(h), {}) for h in CRASHERS]
    while len(out) < len(CRASHERS) + n:
        template, role = rng.choice(TEMPLATES)
        header = mutate(rng, {**template, "wid": f"fuzz-{rng.randint(0, 5)}", "role": role})
        arrays = {"rgb": rng.choice([RGB, np.zeros(0), RGB.astype(np.float64), RGB[:3]])} if rng.random() < 0.3 else {}
        if breaks_the_protocol(header, arrays):
            out.append((header, arrays))
    return out


def test_a_live_master_drops_hostile_messages_and_its_results_match_a_clean_run(tmp_path):
    config = write_config(tmp_path)
    args = ("--render-workers", "1", "--evaluators", "1")
    clean = LiveRun(start_run(config, tmp_path / "clean", *args))
    clean.finish()

    run = LiveRun(start_run(config, tmp_path / "attacked", *args))
    # a peer holding the run's worker key (a buggy or compromised worker): only the schema stands in its way
    _, secret, _, public = run.worker_keys()
    peer = PeerEndpoint(run.address(), client_secret_key=secret, server_public_key=public)
    try:
        # a render worker that takes a job and answers it with a bad meta, then with a float64 empty rgb
        peer.send({"type": "hello", "wid": "evil", "role": "render"})
        peer.send({"type": "ready", "wid": "evil", "role": "render"})
        job_id = None
        deadline = time.monotonic() + 60
        while job_id is None and time.monotonic() < deadline:
            got = peer.recv(timeout=1.0)
            if got is not None and got[0].get("type") == "job":
                job_id = got[0]["job"]["id"]
            elif got is not None and got[0].get("type") == "wait":
                peer.send({"type": "ready", "wid": "evil", "role": "render"})
        assert job_id is not None, "the master never gave the hostile worker a job"
        peer.send({"type": "result", "wid": "evil", "role": "render", "job_id": job_id, "meta": 5}, {"rgb": RGB})
        peer.send({"type": "result", "wid": "evil", "role": "render", "job_id": job_id, "meta": {}},
                  {"rgb": np.zeros(0)})
        messages = hostile_messages(seed=0, n=300)
        for header, arrays in messages:   # raw frames: the peer's own encoder would refuse some of them
            peer._send_parts(encode(header, arrays), 5.0, "a hostile message")
        # a peer that floods 10,000 hellos without reading a reply, then closes (it aborted libzmq, and
        # stalled the master ~2 s per reply): it is throttled and costs the real workers nothing
        flooder = PeerEndpoint(run.address(), client_secret_key=secret, server_public_key=public)
        hello = encode({"v": 1, "type": "hello", "wid": "flood", "role": "render"}, {})
        for _ in range(10_000):
            flooder._send_parts(hello, 5.0, "a hello")
        flooder.close()
        result = run.finish()
    finally:
        peer.close()
    # each hostile message is dropped by the schema or, earlier, by the transport (e.g. a non-string type)
    assert result["dropped"] >= len(CRASHERS) + 2 and result["dropped"] + result["rejected"] >= len(messages) + 2
    assert "Traceback" not in run.stderr
    # how many are throttled depends on how fast this machine's master drains them (the budget is per
    # second); the limiter's arithmetic is tested exactly below, here it must merely have acted
    assert result["throttled"] > 0
    assert not re.search(r"worker (render|evaluator)-\S+ silent", run.stderr), run.stderr[-2000:]
    clean_rows = sorted((tmp_path / "clean" / "details.log").read_text().splitlines())
    attacked_rows = sorted((tmp_path / "attacked" / "details.log").read_text().splitlines())
    assert attacked_rows == clean_rows   # every job once, each row byte for byte the clean run's


def test_each_peer_has_its_own_message_budget():
    from threedb.sim.run.peer_limits import PeerLimiter

    now = [0.0]
    limiter = PeerLimiter(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [limiter.allow(b"a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(b"b")                     # another peer is not affected
    now[0] += 1.0                                  # two tokens a second come back
    assert [limiter.allow(b"a") for _ in range(3)] == [True, True, False]
    assert limiter.throttled == 2
    with pytest.raises(ValueError):
        PeerLimiter(rate=0)
