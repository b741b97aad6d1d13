"""Synthetic render workers and a synthetic evaluator for a real ``threedb run`` master: no Blender, no model.

They speak the real worker protocol through the project's own worker link
(:class:`threedb.sim.run.common.Connection`, i.e. :class:`~threedb.sim.transport.PeerEndpoint` and the
:mod:`threedb.sim.frames` encoding, CURVE keys included), so the master sees exactly what it sees from
``threedb worker`` / ``threedb evaluator``:

* a render worker says ``hello`` (the ``welcome`` names the run's resolution and the passes to send),
  asks for work with ``ready``, and answers every ``job`` at once with a ``result``: a pre-made
  ``uint8 H x W x 3`` rgb frame (threedb's own renders: the control previews of ``docs/images/controls``,
  resized to the run's resolution), each pass the welcome asks for (the dtype and shape of
  :data:`threedb.sim.run.messages.PASS_LAYOUT`) and a render's usual metadata (``K``, poses);
* the evaluator says ``hello``, builds the run's task evaluator from the welcome (no model is loaded) to
  learn its declared outputs, asks for batches with ``ready`` and answers each ``batch`` with one row of
  outputs of the declared keys, shapes and dtypes per job.

"Full speed" is bounded by the protocol's per-peer message budget (:mod:`threedb.sim.run.peer_limits`,
200 messages/s sustained): what a peer sends beyond it is dropped unread, and a dropped ``result`` is
never re-sent (the worker waits for the lease to expire), so each synthetic worker paces itself below
it (``--pace``, default 90 % of the budget). One host process runs ``--count`` workers as threads, each
with its own ZeroMQ context, socket, CURVE session and worker id: the master sees ``--count`` peers.

Start-up barrier (so a measurement window sees every worker at work): with ``--ready-dir DIR --go FILE``
each worker, once welcomed, writes ``DIR/<worker id>`` and heartbeats until ``FILE`` exists.

    python benchmarks/synthetic_workers.py render --connect ADDR --key SECRET --server-key PUBLIC [--count N]
    python benchmarks/synthetic_workers.py evaluator --connect ADDR --key SECRET --server-key PUBLIC [--batch-size B]

Each host writes ``--report FILE`` (JSON: per worker, the jobs or batches it answered, its ``wait``
replies and messages sent) when its workers have stopped (the master's ``die``, or ``--master-timeout``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PREVIEWS = REPO / "docs" / "images" / "controls"

log = logging.getLogger("synthetic_workers")


# ------------------------------------------------------------------------------------------- frames

def base_images(count: int = 8) -> list[np.ndarray]:
    """``count`` RGB uint8 renders of threedb's (the two 128 px halves of each control preview), or smooth
    synthetic images when the previews are missing."""
    import cv2

    images: list[np.ndarray] = []
    for path in sorted(PREVIEWS.glob("*.png")):
        bgr = cv2.imread(str(path))
        if bgr is None or bgr.shape[0] < 64:
            continue
        side = bgr.shape[0]
        for x0 in (0, bgr.shape[1] - side):    # the "without" and "with" halves
            images.append(np.ascontiguousarray(bgr[:, x0:x0 + side, ::-1]))
        if len(images) >= count:
            break
    while len(images) < count:   # fallback: a lit gradient with a square "object"
        k = len(images)
        y, x = np.mgrid[0:128, 0:128]
        img = np.stack([(x + 8 * k) % 256, (y + 16 * k) % 256, (x + y) // 2 % 256], axis=-1).astype(np.uint8)
        img[40:90, 40:90] = (200, 60 + 10 * k, 40)
        images.append(img)
    return images[:count]


def make_frames(resolution: Sequence[int], passes: Sequence[str], count: int = 8) -> list[dict[str, np.ndarray]]:
    """``count`` pre-made render outputs at ``resolution`` (width, height): ``rgb`` plus each of ``passes``
    with the layout the master checks (:data:`threedb.sim.run.messages.PASS_LAYOUT`)."""
    import cv2

    from threedb.sim.run.messages import PASS_LAYOUT

    width, height = int(resolution[0]), int(resolution[1])
    out = []
    for k, image in enumerate(base_images(count)):
        rgb = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if width < image.shape[1]
                         else cv2.INTER_LINEAR)
        frame = {"rgb": np.ascontiguousarray(rgb, dtype=np.uint8)}
        mask = rgb.astype(np.int16).sum(axis=-1) > 3 * 110     # something object-shaped
        for name in passes:
            dtype, trailing = PASS_LAYOUT.get(name, (np.uint8, ()))
            if name == "mask":
                frame[name] = mask.copy()
            elif name == "depth":
                frame[name] = np.where(mask, 4.0 + 0.1 * k, np.inf).astype(np.float32)
            elif name == "uv":
                uv = np.zeros((height, width, 2), np.float32)
                uv[..., 0], uv[..., 1] = np.linspace(0, 1, width)[None, :], np.linspace(0, 1, height)[:, None]
                uv[~mask] = np.nan
                frame[name] = uv
            else:
                frame[name] = np.zeros((height, width, *trailing), dtype=dtype)
        out.append(frame)
    return out


def render_meta(job: dict[str, Any]) -> dict[str, Any]:
    """The metadata a real render sends beside its frames (intrinsics, poses, timing, controls report)."""
    eye = np.eye(4).tolist()
    return {"K": [[250.0, 0.0, 112.0], [0.0, 250.0, 112.0], [0.0, 0.0, 1.0]], "camera_to_world": eye,
            "object_to_world": eye, "render_seconds": 0.0, "controls_report": {}, "rss_bytes": 0}


# ------------------------------------------------------------------------------------------ workers

class Pacer:
    """At most ``rate`` messages/s (a gap of ``1 / rate`` s between sends); ``rate <= 0``: no pacing."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    def wait(self) -> None:
        if self.gap:
            now = time.monotonic()
            if now < self.next:
                time.sleep(self.next - now)
                now = self.next
            self.next = now + self.gap


def _connection(args: argparse.Namespace, role: str) -> Any:
    from threedb.sim.run.common import Connection

    ns = argparse.Namespace(connect=args.connect, key=args.key, server_key=args.server_key,
                            insecure=False, master_timeout=args.master_timeout)
    return Connection(ns, role)


def _barrier(conn: Any, args: argparse.Namespace) -> None:
    """Say "welcomed" in ``--ready-dir`` and heartbeat until the ``--go`` file exists."""
    if not args.go:
        return
    if args.ready_dir:
        Path(args.ready_dir, conn.wid).write_text("")
    go = Path(args.go)
    last = time.monotonic()
    while not go.exists():
        time.sleep(0.01)
        if time.monotonic() - last >= 1.0:
            conn.send({"type": "heartbeat"})
            last = time.monotonic()


def render_worker(args: argparse.Namespace, stats: dict[str, Any]) -> None:
    """One synthetic render worker: answer every job at once with pre-made frames until told to stop."""
    from threedb.sim.run.common import MasterGone

    conn = _connection(args, "render")
    stats.update(wid=conn.wid, jobs=0, waits=0, messages=0, error=None)
    pacer = Pacer(args.pace)
    try:
        welcome, _ = conn.request({"type": "hello"}, expect=("welcome",))
        stats["messages"] += 1
        frames = make_frames(welcome["render"]["resolution"], welcome.get("send_passes", []))
        _barrier(conn, args)
        message: dict[str, Any] = {"type": "ready"}
        arrays: dict[str, np.ndarray] | None = None
        while True:
            pacer.wait()
            reply, _ = conn.request(message, arrays, expect=("job", "wait"))
            stats["messages"] += 1
            if reply["type"] == "wait":
                stats["waits"] += 1
                message, arrays = {"type": "ready"}, None
                time.sleep(float(reply.get("retry_s", 0.2)))
                continue
            job = reply["job"]
            arrays = frames[stats["jobs"] % len(frames)]
            message = {"type": "result", "job_id": job["id"], "meta": render_meta(job)}
            stats["jobs"] += 1
    except MasterGone as exc:
        stats["stopped"] = str(exc)
    except Exception as exc:   # reported, not raised: the host's other workers go on
        stats["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def output_factory(welcome: dict[str, Any]) -> Any:
    """``rows(n) -> list of n output rows`` with the keys, shapes and dtypes the run's evaluator declares."""
    from threedb.evaluators.base import load_evaluator
    from threedb.sim.store import _jsonable

    evaluator = load_evaluator(welcome["evaluation"], base_dir=welcome.get("base_dir"),
                               file=welcome.get("config_file"))
    specs = evaluator.declare_outputs()

    def rows(ids: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for k, _ in enumerate(ids):
            row = {}
            for spec in specs:
                value = np.zeros(spec.shape, dtype=spec.dtype)
                if spec.dtype == "bool" and spec.shape == ():
                    value = np.bool_(k % 2 == 0)     # half the jobs "correct"
                row[spec.name] = _jsonable(value)
            out.append(row)
        return out

    return rows


def evaluator_worker(args: argparse.Namespace, stats: dict[str, Any]) -> None:
    """One synthetic evaluator: answer every batch at once with outputs of the declared keys."""
    from threedb.sim.run.common import MasterGone

    conn = _connection(args, "evaluator")
    stats.update(wid=conn.wid, jobs=0, batches=0, waits=0, messages=0, bad_frames=0, error=None)
    pacer = Pacer(args.pace)
    try:
        welcome, _ = conn.request({"type": "hello"}, expect=("welcome",))
        stats["messages"] += 1
        rows = output_factory(welcome)
        width, height = welcome["render"]["resolution"]
        batch_size = int(args.batch_size or welcome.get("batch_size") or 16)
        _barrier(conn, args)
        message: dict[str, Any] = {"type": "ready", "batch_size": batch_size}
        while True:
            pacer.wait()
            reply, arrays = conn.request(message, expect=("batch", "wait"))
            stats["messages"] += 1
            message = {"type": "ready", "batch_size": batch_size}
            if reply["type"] == "wait":
                stats["waits"] += 1
                time.sleep(float(reply.get("retry_s", 0.1)))
                continue
            ids = [item["job_id"] for item in reply["items"]]
            for i in range(len(ids)):   # what a real evaluator stacks: every item's rgb, of the run's size
                rgb = arrays.get(f"{i}/rgb")
                if rgb is None or rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
                    stats["bad_frames"] += 1
            message.update({"type": "outputs",
                            "results": [{"job_id": j, "outputs": r} for j, r in zip(ids, rows(ids))]})
            stats["jobs"] += len(ids)
            stats["batches"] += 1
    except MasterGone as exc:
        stats["stopped"] = str(exc)
    except Exception as exc:
        stats["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def host(args: argparse.Namespace) -> int:
    """Run ``--count`` workers of ``args.role`` as threads; write the report when all have stopped."""
    target = render_worker if args.role == "render" else evaluator_worker
    stats: list[dict[str, Any]] = [{} for _ in range(args.count)]
    threads = [threading.Thread(target=target, args=(args, s), daemon=True) for s in stats]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if args.report:
        Path(args.report).write_text(json.dumps(stats))
    return 1 if any(s.get("error") for s in stats) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("render", "evaluator"))
    parser.add_argument("--connect", required=True)
    parser.add_argument("--key", required=True, help="the workers' CURVE secret key")
    parser.add_argument("--server-key", required=True, help="the master's CURVE public key")
    parser.add_argument("--count", type=int, default=1, help="workers in this process (threads)")
    parser.add_argument("--batch-size", type=int, default=None, help="evaluator: batch asked for (default the run's)")
    parser.add_argument("--pace", type=float, default=None,
                        help="messages/s per worker at most (default 90%% of the master's per-peer budget; 0: none)")
    parser.add_argument("--ready-dir", help="write a file per welcomed worker here")
    parser.add_argument("--go", help="wait (heartbeating) until this file exists before asking for work")
    parser.add_argument("--report", help="write the per-worker counts here (JSON) at the end")
    parser.add_argument("--master-timeout", type=float, default=30.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.pace is None:
        from threedb.sim.run.peer_limits import PEER_RATE

        args.pace = 0.9 * PEER_RATE
    return host(args)


if __name__ == "__main__":
    sys.exit(main())
