"""Local workers authenticate with per-run keys (issue 16): a local process without them cannot join,
take jobs, abort the run or read the welcome; with them an external worker on this machine can."""
from __future__ import annotations

import time
from pathlib import Path

from run_cli import LiveRun, start_run
from test_run import expected_ids, ids, rows, write_config

from threedb.sim.transport import PeerEndpoint


def test_an_unauthenticated_local_peer_gets_nothing_and_cannot_abort_the_run(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    run = LiveRun(start_run(config, out, "--render-workers", "1", "--evaluators", "1"))
    key_folder = Path(run.worker_keys()[1]).parents[1]
    stranger = PeerEndpoint(run.address())
    try:
        for message in ({"type": "hello", "wid": "x", "role": "render"},
                        {"type": "fatal", "wid": "x", "role": "render", "error": "forged"}):
            stranger.send(message, timeout=2.0)
        deadline, replies = time.monotonic() + 3.0, []
        while time.monotonic() < deadline:
            got = stranger.recv(timeout=0.2)
            if got is not None:
                replies.append(got[0])
        result = run.finish()
    finally:
        stranger.close()
    assert replies == []   # no welcome: neither the config nor any path leaks
    assert result["failed"] == 0 and sorted(ids(out)) == sorted(expected_ids(4))
    assert all(r["status"] == "ok" for r in rows(out))
    assert not key_folder.exists()   # the per-run keys go with the run
