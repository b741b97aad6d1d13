"""Master capacity: frames/s through a real `threedb run` master fed by synthetic workers, against raw ZeroMQ.

Everything is measured side by side in one run, on loopback, with CURVE on every socket (the per-run keys
`threedb run` gives its local workers, ``threedb.sim.run.run_keys``):

* **raw limit**: one process sends the very messages a render worker sends (``threedb.sim.frames``: the
  JSON header and a 224 x 224 x 3 uint8 frame) as fast as it can over a DEALER socket to a ROUTER in a
  second process (same socket options and CURVE setting as the master's endpoint), which only receives:
  frames/s one way;
* **pipeline**: a real ``threedb.sim.run.master.Master`` (in its own process, set up as ``threedb run``
  sets it up: ``MasterEndpoint`` on 127.0.0.1 with per-run keys, the model checked on the CPU, a
  ``RunStore`` writing ``details.log`` and the images) fed by N synthetic render workers and one synthetic
  evaluator (``benchmarks/synthetic_workers.py``: the real protocol through ``Connection``/``PeerEndpoint``,
  no Blender, no model). Every frame goes render worker -> master -> evaluator, and every job is recorded.
  Sustained frames/s = jobs recorded per second over a window (``--seconds``) that starts ``--warmup`` s
  after the first record, once every worker has been welcomed (a start barrier); the master's CPU over the
  same window (the whole process: its Python thread plus ZeroMQ's I/O thread, where CURVE runs), and the
  workers' and evaluator's CPU (from /proc);
* **bookkeeping**: the same with 8 x 8 frames, so the per-job cost dominates: jobs/s;
* **variants** (``--variants``): the 224 px and 8 px points at the largest worker count again with
  ``logging.log_images: none`` (``rows``), also with the run directory on /dev/shm (``rows@shm``: no fsync
  cost) and also with a random policy instead of the grid (``rows@shm+random``), to split the master's time
  per job between images, fsync, the relay of the frames, bookkeeping and the grid policy;
* **profile** (unless ``--no-profile``): cProfile of the master's process over the measurement window
  (cProfile slows Python down, so these runs' rates are not the figures; the shares are what counts).

Every job is recorded at most once (checked on ``details.log`` after each point: ``dup`` counts
duplicates, expected 0). The 2-core machine runs the master, the workers and the evaluator together:
the CPU columns show what the machine had left.

    python benchmarks/master_capacity.py [--workers 1 2 5 10 25] [--seconds 4] [--batch-size 64]
        [--procs 8] [--variants rows rows@shm rows@shm+random] [--no-profile] [--profile-dir DIR] [--json FILE]
    python benchmarks/master_capacity.py --workers 1 2 5 10 25 50 100    # the issue's scale (slower)

Each synthetic worker stays below the master's per-peer message budget (200 messages/s,
``threedb.sim.run.peer_limits``; beyond it messages are dropped unread), so N workers offer at most
N x 180 jobs/s (the ``thr`` column counts throttled messages). Figures and their reading: docs/scaling.md.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
WORKERS_SCRIPT = HERE / "synthetic_workers.py"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: the tiny model of the run's config: the master builds it once on the CPU before starting (as
#: `threedb run` does); the synthetic evaluator never loads it.
MODEL = '''
import torch
from torch import nn


class CapacityNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))
'''


# -------------------------------------------------------------------------------------- the config

def write_config(work: Path, *, resolution: int, jobs: int, batch_size: int = 64, log_images: str = "all",
                 passes: Sequence[str] = (), policy: str = "grid", name: str = "capacity") -> Path:
    """An experiment of at least ``jobs`` jobs (2 objects of the bundled pack x 1 environment; the three
    rotations searched by a ``grid`` policy, or ``random``) at ``resolution`` px, classified by a tiny CNN
    (``inference.batch_size``: ``batch_size``); ``passes`` are rendered and kept (``logging.extra_passes``),
    so the master asks workers for them."""
    import torch
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    model_file = work / "capacity_net.py"
    if not model_file.exists():
        model_file.write_text(MODEL)
        namespace: dict[str, Any] = {}
        exec(compile(MODEL, str(model_file), "exec"), namespace)
        torch.manual_seed(0)
        torch.save(namespace["CapacityNet"]().state_dict(), work / "capacity.pt")
        (work / "classes.json").write_text(json.dumps(["mug", "duck", "other"]))
        (work / "map.json").write_text(json.dumps({"mug": 0, "duck": 1}))
    config = {
        "seed": 0,
        "assets": {"root": "default", "objects": ["mug", "duck"], "environments": ["city"]},
        "render": {"resolution": resolution, "samples": 1, "passes": list(passes), "threads": 1},
        "controls": [{"type": "orientation", "rotation_x": [-1.5, 1.5], "rotation_y": [-1.5, 1.5],
                      "rotation_z": [-3.0, 3.0]}],
        "policy": ({"type": "grid", "samples_per_dim": max(2, math.ceil((jobs / 2) ** (1 / 3)))}
                   if policy == "grid" else {"type": "random", "samples": max(1, math.ceil(jobs / 2))}),
        "inference": {"file": "capacity_net.py", "class": "CapacityNet", "weights": "capacity.pt",
                      "resolution": [32, 32], "label_map": "classes.json", "device": "cpu",
                      "batch_size": batch_size,
                      "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        "evaluation": {"type": "classification", "args": {"classmap_path": "map.json"}},
        "logging": {"log_images": log_images, "extra_passes": list(passes)},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------------------ the master process

def _cpu_self() -> tuple[float, float]:
    """(process CPU seconds, all threads; this thread's CPU seconds)."""
    t = os.times()
    return t.user + t.system, time.thread_time()


def serve_master(args: argparse.Namespace) -> int:
    """A real Master on 127.0.0.1 with per-run CURVE keys (as `threedb run` sets it up), measured."""
    import logging

    from threedb.sim.config import load_config
    from threedb.sim.errors import ThreeDBError
    from threedb.sim.experiment import prepare
    from threedb.sim.run.master import Master
    from threedb.sim.run.progress import Progress
    from threedb.sim.run.run_keys import RunKeys
    from threedb.sim.transport import MasterEndpoint

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    class TimedProgress(Progress):
        """The run's progress, with the time of every recorded job."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.stamps: list[float] = []

        def update(self, *, ok: bool) -> None:
            super().update(ok=ok)
            self.stamps.append(time.monotonic())

    prepared = prepare(load_config(args.config))
    keys = RunKeys.create()
    endpoint = MasterEndpoint("127.0.0.1", 0, server_secret_key=keys.master_secret, authorized_keys=keys.authorized)
    devnull = open(os.devnull, "w")
    progress = TimedProgress(None, stream=devnull)
    master = Master(prepared, args.out, endpoint, lease_timeout_s=args.lease_timeout, progress=progress,
                    command=["master_capacity"], check_model=True)
    progress.total = master.total
    info = {"address": endpoint.address, "key": str(keys.worker_secret), "server_key": str(keys.master_public),
            "total": master.total}
    tmp = Path(args.info).with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, args.info)

    profiler = cProfile.Profile() if args.profile else None
    samples: list[tuple[float, float, float]] = []   # (monotonic, process CPU s, main-thread CPU s)
    window: dict[str, Any] = {}

    def alive() -> str | None:
        now = time.monotonic()
        cpu, thread = _cpu_self()
        samples.append((now, cpu, thread))
        if not progress.stamps:
            return None
        if "a" not in window and now >= progress.stamps[0] + args.warmup:
            window["a"] = len(samples) - 1
            if profiler is not None:
                profiler.enable()
        elif "a" in window and now >= samples[window["a"]][0] + args.seconds:
            if profiler is not None:
                profiler.disable()
            window["b"] = len(samples) - 1
            return "benchmark window over"
        return None

    result: dict[str, Any] = {}
    aborted = False
    samples.append((time.monotonic(), *_cpu_self()))   # the window of a run that ends before it opens
    try:
        try:
            result = master.run(alive=alive)
        except ThreeDBError as exc:
            if "benchmark window over" not in str(exc):
                raise
            aborted = True
        end = time.monotonic()
        if "b" not in window:   # finished before the window closed: measure up to the last record
            if profiler is not None and "a" in window:
                profiler.disable()
            cpu, thread = _cpu_self()
            samples.append((end, cpu, thread))
            window.setdefault("a", 0)
            window["b"] = len(samples) - 1
        (ta, ca, tha), (tb, cb, thb) = samples[window["a"]], samples[window["b"]]
        records = sum(1 for t in progress.stamps if ta < t <= tb)
        if not aborted and progress.stamps:   # a finished run: its window ends at its last record
            tb = min(tb, progress.stamps[-1])
        span = max(tb - ta, 1e-9)
        out = {"window": {"t0": ta, "t1": tb, "seconds": span, "jobs": records, "rate": records / span,
                          "master_cpu": (cb - ca) / span, "master_main_thread_cpu": (thb - tha) / span,
                          "first_record": progress.stamps[0] if progress.stamps else None},
               "aborted": aborted, "recorded": len(progress.stamps), "renders": progress.renders,
               "total": master.total, "max_held": master.max_held, "max_rendered": master.max_rendered,
               "dropped": master.dropped, "throttled": master.limiter.throttled, "unsent": master.unsent,
               "rejected": endpoint.rejected, "result": result}
    finally:
        master.shutdown(grace_s=2.0)
        endpoint.close()
        keys.remove()
        devnull.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)
    Path(args.result).write_text(json.dumps(out))
    return 0


# ----------------------------------------------------------------------------------- raw ZeroMQ pair

def _curve_router(keys: Any) -> tuple[Any, Any, Any]:
    """A ROUTER with the master endpoint's options and CURVE setting (authenticator on the workers' keys)."""
    import zmq
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized))
    sock = ctx.socket(zmq.ROUTER)
    _options(sock)
    public, secret = zmq.auth.load_certificate(keys.master_secret)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True
    sock.bind("tcp://127.0.0.1:*")
    return ctx, auth, sock


def _options(sock: Any) -> None:
    import zmq

    from threedb.sim import transport

    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, transport.DEFAULT_HWM)
    sock.setsockopt(zmq.RCVHWM, transport.DEFAULT_HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, transport.DEFAULT_MAX_FRAME_BYTES)
    sock.setsockopt(zmq.HEARTBEAT_IVL, transport.HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, transport.HEARTBEAT_TIMEOUT_MS)


def raw_message(resolution: int) -> list[bytes]:
    """What a render worker sends for one job: frames.encode(result header, {rgb}) (no passes)."""
    sys.path.insert(0, str(HERE))
    from synthetic_workers import make_frames, render_meta

    from threedb.sim import frames

    rgb = make_frames((resolution, resolution), ())[0]
    header = {"type": "result", "job_id": "city-mug-p000000", "meta": render_meta({}), "wid": "render-x",
              "role": "render", "seq": 1}
    return frames.encode(header, rgb)


def raw_recv(args: argparse.Namespace) -> int:
    """Receive for ``--warmup`` + ``--seconds`` after the first message; write frames/s."""
    import zmq

    from threedb.sim.run.run_keys import RunKeys

    keys = RunKeys.create()
    ctx, auth, sock = _curve_router(keys)
    info = {"address": sock.getsockopt_string(zmq.LAST_ENDPOINT), "key": str(keys.worker_secret),
            "server_key": str(keys.master_public)}
    tmp = Path(args.info).with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, args.info)
    try:
        if not sock.poll(120_000):
            raise SystemExit("raw receiver: no sender")
        sock.recv_multipart()
        first = time.monotonic()
        while time.monotonic() < first + args.warmup:
            sock.recv_multipart()
        ta, ca = time.monotonic(), sum(os.times()[:2])
        n = nbytes = 0
        while time.monotonic() < ta + args.seconds:
            parts = sock.recv_multipart()   # copy=True, as the master's endpoint receives
            n += 1
            nbytes += sum(len(p) for p in parts[1:])
        tb, cb = time.monotonic(), sum(os.times()[:2])
        Path(args.result).write_text(json.dumps({"rate": n / (tb - ta), "bytes_per_s": nbytes / (tb - ta),
                                                 "message_bytes": nbytes / max(n, 1), "recv_cpu": (cb - ca) / (tb - ta),
                                                 "t0": ta, "t1": tb}))
    finally:
        sock.close(0)
        auth.stop()
        ctx.term()
        keys.remove()
    return 0


def raw_send(args: argparse.Namespace) -> int:
    """Send one render worker's result message to ``--connect`` over and over (until killed)."""
    import zmq
    import zmq.auth

    parts = raw_message(args.resolution)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    _options(sock)
    public, secret = zmq.auth.load_certificate(args.key)
    server, _ = zmq.auth.load_certificate(args.server_key)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server
    sock.connect(args.connect)
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        sock.send_multipart(parts, copy=False)   # blocks at the HWM: the receiver sets the pace
    sock.close(0)
    ctx.term()
    return 0


# ----------------------------------------------------------------------------------------- driver

def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuSampler:
    """CPU seconds of some processes sampled against time.monotonic (system-wide on Linux)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.samples: list[tuple[float, list[float | None]]] = []

    def sample(self) -> None:
        self.samples.append((time.monotonic(), [_proc_cpu(p) for p in self.pids]))

    def cpu_between(self, ta: float, tb: float) -> float:
        """Cores used by all the processes between ``ta`` and ``tb`` (linear interpolation of samples)."""
        def at(t: float, i: int) -> float | None:
            points = [(s, v[i]) for s, v in self.samples if v[i] is not None]
            if not points:
                return None
            before = [p for p in points if p[0] <= t]
            after = [p for p in points if p[0] >= t]
            if not before or not after:
                return (before or after)[-1 if before else 0][1]
            (s0, v0), (s1, v1) = before[-1], after[0]
            return v0 if s1 == s0 else v0 + (v1 - v0) * (t - s0) / (s1 - s0)

        total = 0.0
        for i in range(len(self.pids)):
            a, b = at(ta, i), at(tb, i)
            if a is not None and b is not None:
                total += b - a
        return total / max(tb - ta, 1e-9)


def _wait_file(path: Path, procs: Sequence[subprocess.Popen], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: a process exited ({p.returncode}) early; see {path.parent}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: timed out after {timeout:.0f} s")
        time.sleep(0.05)


def _stop(procs: Sequence[subprocess.Popen], grace: float) -> None:
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.05))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def raw_point(work: Path, resolution: int, *, seconds: float, warmup: float) -> dict[str, Any]:
    """Raw one-way ZeroMQ throughput of a render worker's messages (CURVE, DEALER -> ROUTER)."""
    d = Path(tempfile.mkdtemp(prefix=f"raw{resolution}-", dir=work))
    info, res = d / "info.json", d / "result.json"
    logf = open(d / "recv.log", "w")
    recv = subprocess.Popen([PY, __file__, "raw-recv", "--info", str(info), "--result", str(res),
                             "--seconds", str(seconds), "--warmup", str(warmup)], stdout=logf, stderr=logf)
    try:
        _wait_file(info, [recv], 60, "raw receiver")
        i = json.loads(info.read_text())
        send = subprocess.Popen([PY, __file__, "raw-send", "--connect", i["address"], "--key", i["key"],
                                 "--server-key", i["server_key"], "--resolution", str(resolution),
                                 "--max-seconds", str(warmup + seconds + 60)], stdout=logf, stderr=logf)
        sampler = CpuSampler([send.pid])
        while recv.poll() is None:
            sampler.sample()
            time.sleep(0.2)
        send.kill()
        send.wait()
        if recv.returncode != 0 or not res.exists():
            raise RuntimeError(f"raw receiver failed ({recv.returncode}); see {d / 'recv.log'}")
        out = json.loads(res.read_text())
        out["send_cpu"] = sampler.cpu_between(out["t0"], out["t1"])
        return out
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
        logf.close()


def pipeline_point(work: Path, config: Path, workers: int, *, seconds: float, warmup: float, procs: int,
                   batch_size: int, run_root: Path, label: str, profile: Path | None = None,
                   evaluators: int = 1, pace: float | None = None, lease_timeout: float = 10.0,
                   timeout: float = 300.0) -> dict[str, Any]:
    """One measurement: a master process, ``workers`` synthetic render workers in ``min(procs, workers)``
    host processes, ``evaluators`` synthetic evaluators; returns the master's window figures plus the
    workers' CPU, their reports and the exactly-once check of ``details.log``."""
    d = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
    run_root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=run_root)) / "run"
    info, res, ready, go = d / "info.json", d / "result.json", d / "ready", d / "go"
    ready.mkdir()
    logf = open(d / "master.log", "w")
    cmd = [PY, __file__, "master", "--config", str(config), "--out", str(run_dir), "--info", str(info),
           "--result", str(res), "--seconds", str(seconds), "--warmup", str(warmup),
           "--lease-timeout", str(lease_timeout)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    master = subprocess.Popen(cmd, stdout=logf, stderr=logf)
    hosts: list[subprocess.Popen] = []
    evals: list[subprocess.Popen] = []
    try:
        _wait_file(info, [master], 120, "master start-up")
        i = json.loads(info.read_text())
        common = ["--connect", i["address"], "--key", i["key"], "--server-key", i["server_key"],
                  "--ready-dir", str(ready), "--go", str(go)]
        if pace is not None:
            common += ["--pace", str(pace)]
        n_hosts = max(1, min(procs, workers))
        shares = [workers // n_hosts + (1 if k < workers % n_hosts else 0) for k in range(n_hosts)]
        for k, share in enumerate(shares):
            hosts.append(subprocess.Popen([PY, str(WORKERS_SCRIPT), "render", "--count", str(share), *common,
                                           "--report", str(d / f"render{k}.json")], stdout=logf, stderr=logf))
        for k in range(evaluators):
            evals.append(subprocess.Popen([PY, str(WORKERS_SCRIPT), "evaluator", "--batch-size", str(batch_size),
                                           *common, "--report", str(d / f"eval{k}.json")], stdout=logf, stderr=logf))
        deadline = time.monotonic() + 180
        while len(os.listdir(ready)) < workers + evaluators:
            if time.monotonic() > deadline or master.poll() is not None or any(
                    p.poll() is not None for p in hosts + evals):
                raise RuntimeError(f"workers did not all join ({len(os.listdir(ready))}/{workers + evaluators});"
                                   f" see {d / 'master.log'}")
            time.sleep(0.05)
        render_cpu, eval_cpu = CpuSampler([p.pid for p in hosts]), CpuSampler([p.pid for p in evals])
        go.write_text("")
        deadline = time.monotonic() + timeout
        while master.poll() is None:
            render_cpu.sample()
            eval_cpu.sample()
            if time.monotonic() > deadline:
                raise RuntimeError(f"master did not finish within {timeout:.0f} s; see {d / 'master.log'}")
            time.sleep(0.2)
        if master.returncode != 0 or not res.exists():
            raise RuntimeError(f"master failed ({master.returncode}): {(d / 'master.log').read_text()[-2000:]}")
        out = json.loads(res.read_text())
        w = out["window"]
        out["workers_cpu"] = render_cpu.cpu_between(w["t0"], w["t1"])
        out["evaluator_cpu"] = eval_cpu.cpu_between(w["t0"], w["t1"])
        _stop(hosts + evals, 8.0)
        reports = []
        for path in sorted(d.glob("render*.json")) + sorted(d.glob("eval*.json")):
            reports += json.loads(path.read_text())
        out["worker_reports"] = reports
        out["worker_errors"] = [r["error"] for r in reports if r.get("error")]
        ids = [json.loads(line)["id"] for line in (run_dir / "details.log").read_text().splitlines()]
        out["logged"], out["duplicates"] = len(ids), len(ids) - len(set(ids))
        out["run_dir"] = str(run_dir)
        return out
    finally:
        for p in [master, *hosts, *evals]:
            if p.poll() is None:
                p.kill()
                p.wait()
        logf.close()


def profile_summary(path: Path, top: int = 14) -> str:
    """The master's time over the window: top functions by own time, and own time by source file."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1e-9
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)
    lines = [f"    {'own s':>7} {'share':>6} {'calls':>8}  function"]
    for (file, line, func), (cc, nc, tt, ct, _) in rows[:top]:
        where = f"{Path(file).name}:{line}" if file != "~" else "(builtin)"
        lines.append(f"    {tt:7.3f} {100 * tt / total:5.1f}% {nc:8d}  {func} [{where}]")
    by_file: dict[str, float] = {}
    for (file, _, func), (_, _, tt, _, _) in stats.stats.items():
        key = _module_of(file, func)
        by_file[key] = by_file.get(key, 0.0) + tt
    lines.append("    own time by where it is spent:")
    for key, tt in sorted(by_file.items(), key=lambda kv: kv[1], reverse=True)[:12]:
        lines.append(f"    {tt:7.3f} {100 * tt / total:5.1f}%  {key}")
    return "\n".join(lines)


def _module_of(file: str, func: str) -> str:
    if file == "~":
        if "poll" in func:
            return "zmq poll (waiting for messages: idle)"
        if any(k in func for k in ("fsync", "posix.write", "posix.replace", "open", "posix.lseek")):
            return "file system calls (write, fsync, replace, open)"
        if "imencode" in func:
            return "PNG encoding (cv2.imencode)"
        if "send" in func or "recv" in func:
            return "zmq send/recv (copies)"
        if "json" in func or "dumps" in func or "loads" in func:
            return "json (C)"
        if "validate_python" in func:
            return "pydantic validation (C)"
        return f"other builtins ({func.split(' ')[-1][:40]})"
    path = Path(file)
    parts = path.parts
    if "threedb" in parts or str(REPO) in file:
        rel = path.relative_to(REPO) if str(REPO) in file else path
        return f"threedb {rel}"
    for lib in ("zmq", "pydantic", "json", "numpy", "cv2", "logging"):
        if lib in parts:
            return f"{lib} (Python)"
    return path.name


# ------------------------------------------------------------------------------------------- main

def variant(name: str) -> tuple[str, bool, str]:
    """``(log_images, on /dev/shm, policy)`` of a variant name: ``images`` (the default run: every image and
    row on disk, grid policy), ``rows`` (``log_images: none``), ``@shm`` (the run directory on /dev/shm: no
    fsync cost), ``+random`` (a random policy instead of the grid), e.g. ``rows@shm+random``."""
    rest, _, policy = name.partition("+")
    kind, _, where = rest.partition("@")
    if kind not in ("images", "rows") or where not in ("", "shm") or policy not in ("", "random", "grid"):
        raise SystemExit(f"unknown variant {name!r}: images|rows, then optionally @shm, then optionally +random")
    return ("all" if kind == "images" else "none"), where == "shm", policy or "grid"


def fmt_point(workers: int, p: dict[str, Any], raw_rate: float | None) -> str:
    w = p["window"]
    ratio = f"{w['rate'] / raw_rate:8.3f}" if raw_rate else "       -"
    waits = sum(r.get("waits", 0) for r in p["worker_reports"] if r.get("wid", "").startswith("render"))
    return (f"  {workers:>7} {w['rate']:9.0f} {ratio}   {100 * w['master_cpu']:5.0f}% ({100 * w['master_main_thread_cpu']:3.0f}%)"
            f"   {100 * p['workers_cpu']:5.0f}%   {100 * p['evaluator_cpu']:5.0f}%  {p['max_held']:>4}/{p['max_rendered']:<4}"
            f" {waits:>6}  {p['logged']:>6}  {p['duplicates']:>3}  {p['throttled']:>4}")


def fmt_variant(name: str, p: dict[str, Any], raw_rate: float | None) -> str:
    return f"{name:>16}" + fmt_point(0, p, raw_rate)[9:]


HEADER = ("  workers  frames/s  vs raw   master CPU (py)  workers  evaluator  held/max   waits  logged  dup"
          "  thr")
VHEADER = f"{'variant':>16}" + HEADER[9:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 5, 10, 25],
                        help="render worker counts (default 1 2 5 10 25; the issue's scale adds 50 100)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement window per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds after the first record before it")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="inference.batch_size (the master holds max(4 x it, 32) renders; default 64)")
    parser.add_argument("--procs", type=int, default=8, help="host processes for the synthetic render workers")
    parser.add_argument("--evaluators", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--bookkeeping-resolution", type=int, default=8)
    parser.add_argument("--bookkeeping-workers", type=int, default=None, help="default: the largest --workers")
    parser.add_argument("--variants", nargs="*", default=["rows", "rows@shm", "rows@shm+random"],
                        help="variants measured again at the largest worker count and for bookkeeping: "
                             "images|rows[@shm][+random] (default rows rows@shm rows@shm+random)")
    parser.add_argument("--jobs", type=int, default=60_000, help="jobs per run (more than a window needs)")
    parser.add_argument("--pace", type=float, default=None, help="messages/s per synthetic worker (default 90%% "
                        "of the per-peer budget)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-dir", type=Path, default=None, help="keep the .prof files here")
    parser.add_argument("--run-root", type=Path, default=None, help="run directories (default: a temporary "
                        "folder under /tmp, i.e. disk)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    top = max(args.workers)
    book_workers = args.bookkeeping_workers or top
    figures: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="master-capacity-") as tmp:
        work = Path(tmp)
        run_root = args.run_root or work / "runs"
        shm_root = Path(tempfile.mkdtemp(prefix="master-capacity-", dir="/dev/shm"))
        try:
            def point(resolution: int, workers: int, name: str, label: str, profile: Path | None = None):
                log_images, shm, policy = variant(name)
                cfg = write_config(work / "cfg", resolution=resolution, jobs=args.jobs, batch_size=args.batch_size,
                                   log_images=log_images, policy=policy, name=f"{label}-{resolution}")
                root = shm_root if shm else run_root
                return pipeline_point(work, cfg, workers, seconds=args.seconds, warmup=args.warmup,
                                      procs=args.procs, batch_size=args.batch_size, run_root=root, label=label,
                                      profile=profile, evaluators=args.evaluators, pace=args.pace)

            print(f"master capacity on loopback, CURVE on every socket; {os.cpu_count()} CPU cores, load average "
                  f"{os.getloadavg()[0]:.1f}; window {args.seconds:g} s after {args.warmup:g} s; batch "
                  f"{args.batch_size}, {args.evaluators} evaluator(s); synthetic workers in at most {args.procs} "
                  "processes", flush=True)
            raw = raw_point(work, args.resolution, seconds=args.seconds, warmup=args.warmup)
            raw_small = raw_point(work, args.bookkeeping_resolution, seconds=args.seconds, warmup=args.warmup)
            figures["raw"], figures["raw_small"] = raw, raw_small
            print(f"raw ZeroMQ (DEALER -> ROUTER, CURVE, one way, {raw['message_bytes']:.0f} B messages): "
                  f"{raw['rate']:.0f} frames/s ({raw['bytes_per_s'] / 1e6:.0f} MB/s; receiver CPU "
                  f"{100 * raw['recv_cpu']:.0f}%, sender {100 * raw['send_cpu']:.0f}%)", flush=True)
            print(f"raw ZeroMQ, {args.bookkeeping_resolution} px messages ({raw_small['message_bytes']:.0f} B): "
                  f"{raw_small['rate']:.0f} messages/s", flush=True)

            print(f"\npipeline: {args.resolution} px frames, store: images + rows on disk (the default run)")
            print(HEADER, flush=True)
            figures["pipeline"] = {}
            for n in args.workers:
                p = point(args.resolution, n, "images", f"w{n}")
                figures["pipeline"][n] = p
                print(fmt_point(n, p, raw["rate"]), flush=True)

            figures["stores"] = {}
            if args.variants:
                print(f"\nthe store's and the policy's share: {args.resolution} px, {top} workers")
                print(VHEADER, flush=True)
                for name in args.variants:
                    p = point(args.resolution, top, name, f"s{len(figures['stores'])}")
                    figures["stores"][name] = p
                    print(fmt_variant(name, p, raw["rate"]), flush=True)

            print(f"\nbookkeeping: {args.bookkeeping_resolution} px frames, {book_workers} workers (jobs/s)")
            print(VHEADER.replace("frames/s", "  jobs/s"), flush=True)
            figures["bookkeeping"] = {}
            for name in ["images", *[v for v in args.variants if v != "images"]]:
                p = point(args.bookkeeping_resolution, book_workers, name, f"b{len(figures['bookkeeping'])}")
                figures["bookkeeping"][name] = p
                print(fmt_variant(name, p, raw_small["rate"]), flush=True)

            if not args.no_profile:
                prof_dir = args.profile_dir or work / "profiles"
                prof_dir.mkdir(parents=True, exist_ok=True)
                figures["profiles"] = {}
                for resolution, name, workers in ((args.resolution, "images", top),
                                                  (args.bookkeeping_resolution, "images", book_workers),
                                                  (args.bookkeeping_resolution, "rows@shm+random", book_workers)):
                    prof = prof_dir / f"master-{resolution}px-{name.replace('@', '-').replace('+', '-')}-{workers}w.prof"
                    p = point(resolution, workers, name, "prof", profile=prof)
                    figures["profiles"][str(prof)] = p["window"]
                    print(f"\nprofile of the master ({resolution} px, {name}, {workers} workers; "
                          f"{p['window']['rate']:.0f}/s under cProfile): {prof if args.profile_dir else ''}")
                    print(profile_summary(prof), flush=True)

            pipe = figures["pipeline"]
            print("\nRATIO pipeline / raw ZeroMQ frames/s: " + ", ".join(
                f"{n} workers {pipe[n]['window']['rate'] / raw['rate']:.3f}" for n in args.workers)
                + "  (goal >= 0.5 at 100 workers)")
            for store, p in figures["bookkeeping"].items():
                print(f"BOOKKEEPING ({args.bookkeeping_resolution} px, {store}): "
                      f"{p['window']['rate']:.0f} jobs/s  (goal > 5000)")
            print(f"RELAY CEILING: the master's ZeroMQ I/O thread decrypts every frame in and encrypts it out, "
                  f"so it alone caps the relay near raw / 2 = {raw['rate'] / 2:.0f} frames/s")
            rate = {f"{k}": 1000.0 / p["window"]["rate"] for k, p in figures["stores"].items()}
            book = {f"{k}": 1000.0 / p["window"]["rate"] for k, p in figures["bookkeeping"].items()}
            if top in pipe and {"rows", "rows@shm"} <= set(rate) and "rows@shm" in book:
                images = 1000.0 / pipe[top]["window"]["rate"]
                parts = [("images (PNG encoding, image files)", images - rate["rows"]),
                         ("fsync of each row", rate["rows"] - rate["rows@shm"]),
                         (f"relaying {raw['message_bytes'] / 1000:.0f} kB frames", rate["rows@shm"] - book["rows@shm"]),
                         ("bookkeeping (8 px, rows on /dev/shm)", book["rows@shm"])]
                if "rows@shm+random" in book:
                    parts.append(("  of which the grid policy", book["rows@shm"] - book["rows@shm+random"]))
                print(f"PER JOB master time at {top} workers, {args.resolution} px, default store: {images:.2f} ms = "
                      + " + ".join(f"{what} {ms:.2f}" for what, ms in parts[:4])
                      + (f"; {parts[4][0].strip()} {parts[4][1]:.2f} ms" if len(parts) > 4 else "")
                      + " (differences of noisy rates: read them as rough shares)")
            dup = sum(p["duplicates"] for group in ("pipeline", "stores", "bookkeeping")
                      for p in figures[group].values())
            errors = [e for group in ("pipeline", "stores", "bookkeeping") for p in figures[group].values()
                      for e in p["worker_errors"]]
            print(f"exactly once: {dup} duplicate rows over all points; worker errors: {errors or 'none'}")
        finally:
            shutil.rmtree(shm_root, ignore_errors=True)
    if args.json:
        for group in ("pipeline", "stores", "bookkeeping"):
            for p in figures.get(group, {}).values():
                p.pop("worker_reports", None)
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


def _sub(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("master")
    m.add_argument("--config", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--info", required=True)
    m.add_argument("--result", required=True)
    m.add_argument("--seconds", type=float, default=4.0)
    m.add_argument("--warmup", type=float, default=1.0)
    m.add_argument("--lease-timeout", type=float, default=10.0)
    m.add_argument("--profile")
    r = sub.add_parser("raw-recv")
    r.add_argument("--info", required=True)
    r.add_argument("--result", required=True)
    r.add_argument("--seconds", type=float, default=4.0)
    r.add_argument("--warmup", type=float, default=1.0)
    s = sub.add_parser("raw-send")
    s.add_argument("--connect", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--server-key", required=True)
    s.add_argument("--resolution", type=int, default=224)
    s.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    return {"master": serve_master, "raw-recv": raw_recv, "raw-send": raw_send}[args.cmd](args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("master", "raw-recv", "raw-send"):
        sys.exit(_sub(sys.argv[1:]))
    sys.exit(main())
