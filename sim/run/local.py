"""``threedb run CONFIG --out RUN_DIR``: the master plus local render and evaluator worker subprocesses.

Remote workers may join too: with ``--host``/``--port`` (and CURVE keys for a non-loopback address)
the master's address is printed, and ``threedb worker --connect tcp://HOST:PORT`` /
``threedb evaluator --connect ...`` on other machines get jobs like the local ones.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from threedb.sim.errors import ConfigError
from threedb.sim.run.master import DEFAULT_LEASE_TIMEOUT_S, MAX_ATTEMPTS, Master
from threedb.sim.run.preflight import check_run, describe_plan
from threedb.sim.run.progress import Progress, format_summary, summarize
from threedb.sim.run.ray_cluster import RayWorkers
from threedb.sim.run.run_keys import RunKeys
from threedb.sim.run.supervisor import Supervisor
from threedb.sim.store import write_summary
from threedb.sim.transport import MasterEndpoint, is_loopback

log = logging.getLogger(__name__)


def _spawn(module: str, address: str, extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, "--connect", address, *extra],
                            stdin=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> int:
    from threedb.sim.config import load_config, parse_override
    from threedb.sim.experiment import prepare

    overrides = dict(parse_override(item) for item in getattr(args, "set", []) or [])
    if args.seed is not None:
        overrides["seed"] = args.seed
    experiment = load_config(args.config, overrides=overrides)
    prepared = prepare(experiment)
    for note in experiment.notes:   # what the original-3DB mapping changed or dropped
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        plan = check_run(prepared, load_model_check=not args.no_model_check)
        print(describe_plan(prepared, plan))
        return 0
    if not args.out:
        raise ConfigError("threedb run needs --out RUN_DIR (or --dry-run to only check the config)")
    cluster = _cluster_address(args)
    for flag, count in (("--render-workers", args.render_workers), ("--evaluators", args.evaluators)):
        if count == "auto" and cluster is None:
            raise ConfigError(f"{flag} auto needs --cluster (as many as fit on a Ray cluster)")
    host = args.host
    if cluster is not None:
        from threedb.sim.run.ray_cluster import connect

        node_ip = connect(cluster)
        host = node_ip if is_loopback(args.host) else args.host   # the other nodes must reach the master
    key, authorized, run_keys = args.key, args.authorized_keys, None
    if args.key is None and not args.no_local_auth and (is_loopback(host) or cluster is not None):
        run_keys = RunKeys.create()   # every peer authenticates, on loopback too: per-run CURVE keys
        key, authorized = run_keys.master_secret, run_keys.authorized
    try:
        endpoint = MasterEndpoint(host, args.port, server_secret_key=key, authorized_keys=authorized,
                                  insecure=args.insecure)
    except BaseException:
        if run_keys is not None:
            run_keys.remove()
        raise
    workers: Supervisor | RayWorkers = Supervisor()
    master = None
    try:
        master = Master(prepared, args.out, endpoint, resume=args.resume, lease_timeout_s=args.lease_timeout,
                        max_attempts=args.max_attempts, progress=Progress(None),
                        command=list(sys.argv), check_model=not args.no_model_check)
        master.progress = Progress(master.total, already=len(master.done),
                                   held=None if master.render_only else lambda: len(master.rendered),
                                   overdue=master.overdue)
        if cluster is not None and endpoint.host in ("*", "0.0.0.0"):
            address = f"tcp://{node_ip}:{endpoint.port}"
        else:
            address = f"tcp://{'127.0.0.1' if endpoint.host in ('*', '0.0.0.0') else endpoint.host}:{endpoint.port}"
        joining = (f"; other workers on this machine join with --key {run_keys.worker_secret} --server-key "
                   f"{run_keys.master_public}" if run_keys is not None else "")
        print(f"[threedb run] master at {address}; {master.total} jobs, {len(master.done)} already logged{joining}",
              file=sys.stderr, flush=True)
        if run_keys is not None:
            curve = ["--key", str(run_keys.worker_secret), "--server-key", str(run_keys.master_public)]
        else:
            curve = ["--key", args.worker_key, "--server-key", args.server_public_key] if args.worker_key else []
        device = ["--device", args.device] if args.device else []
        evaluators = 0 if master.render_only else args.evaluators
        if cluster is not None:
            workers = _ray_workers(args, cluster, address, run_keys, evaluators, device)
        else:
            for _ in range(args.render_workers):
                workers.add("render", lambda: _spawn("threedb.sim.run.render_worker", address, curve))
            for _ in range(evaluators):
                workers.add("evaluator", lambda: _spawn("threedb.sim.run.evaluator_worker", address,
                                                        curve + device))
        roles = ("render",) if master.render_only else ("render", "evaluator")
        # local workers that die are started again; a role with no local worker waits for remote ones
        result = master.run(alive=lambda: workers.check(roles))
        result["worker_restarts"] = workers.restarts
        if master.render_only:  # nothing evaluated: no accuracy to summarise
            print(f"[threedb run] render-only run: {result['done']} jobs logged, {result['failed']} failed",
                  file=sys.stderr, flush=True)
            write_summary(args.out, result)
            print(json.dumps(result))
            return 0
        summary = summarize(args.out)
        print(format_summary(summary), file=sys.stderr, flush=True)
        write_summary(args.out, {**result, "summary": summary})
        print(json.dumps({**result, "summary": summary}))
        return 0
    finally:
        if master is not None:
            master.shutdown(grace_s=3.0)
        deadline = time.monotonic() + 5.0
        for proc in workers.processes():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if isinstance(workers, RayWorkers):
            workers.close()
        endpoint.close()
        if run_keys is not None:
            run_keys.remove()


def _cluster_address(args: argparse.Namespace) -> str | None:
    """The Ray address of ``--cluster``, or ``None`` for local workers; Ray itself is an optional extra."""
    if not getattr(args, "cluster", None):
        return None
    from threedb.sim.run.ray_cluster import parse_cluster

    address = parse_cluster(args.cluster)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--cluster ray needs Ray: pip install 'threedb[cluster]' (ray==2.60.0)") from None
    return address


def _ray_workers(args: argparse.Namespace, cluster: str, address: str, run_keys: RunKeys | None,
                 evaluators: int | str, device: list[str]) -> RayWorkers:
    """The run's workers as Ray tasks, given the keys they authenticate with (read here, sent through Ray)."""
    from threedb.sim.run.ray_cluster import RayWorkers, Resources, cluster_gpus

    if run_keys is not None:
        secret, public = run_keys.worker_secret, run_keys.master_public
    elif args.worker_key and args.server_public_key:
        secret, public = args.worker_key, args.server_public_key
    else:
        raise ConfigError("--cluster with --key also needs --worker-key and --server-public-key (the keys the Ray "
                          "workers authenticate with)")
    evaluator_gpus = args.evaluator_gpus if args.evaluator_gpus is not None else (1.0 if cluster_gpus() else 0.0)
    resources = {"render": Resources(args.render_cpus, args.render_gpus),
                 "evaluator": Resources(args.evaluator_cpus, evaluator_gpus)}
    return RayWorkers(cluster, address, Path(secret).read_bytes(), Path(public).read_bytes(),
                      {"render": args.render_workers, "evaluator": evaluators}, resources,
                      extra={"evaluator": device})


def _count(value: str) -> int | str:
    """argparse type of a worker count: a number >= 0 or ``auto``."""
    from threedb.sim.run.ray_cluster import parse_count

    try:
        return parse_count(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="threedb run", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment config (YAML)")
    parser.add_argument("--out", help="run directory (details.log, images/, ...); required unless --dry-run")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything a run would (config, assets, model, evaluator, maps, plugins) and "
                             "print the jobs and the search space; render nothing, create no run directory")
    parser.add_argument("--render-workers", type=_count, default=1,
                        help="render workers (default 1); with --cluster also 'auto': as many as fit")
    parser.add_argument("--evaluators", type=_count, default=1,
                        help="evaluator workers (default 1); with --cluster also 'auto': as many as fit")
    parser.add_argument("--cluster", metavar="ray[:HOST:PORT|://HOST:PORT]",
                        help="start the workers on a Ray cluster (pip install 'threedb[cluster]'): 'ray' joins "
                             "the cluster of this machine (or RAY_ADDRESS); see docs/cluster.md")
    parser.add_argument("--render-cpus", type=float, default=1.0, help="CPUs per Ray render worker (default 1)")
    parser.add_argument("--render-gpus", type=float, default=0.0,
                        help="GPUs per Ray render worker (default 0; e.g. 1 for Cycles on the GPU)")
    parser.add_argument("--evaluator-cpus", type=float, default=1.0, help="CPUs per Ray evaluator (default 1)")
    parser.add_argument("--evaluator-gpus", type=float, default=None,
                        help="GPUs per Ray evaluator (default: 1 if the cluster has GPUs, else 0)")
    parser.add_argument("--device", default=None, help="evaluator device: auto, cpu, cuda (default: config's, else auto)")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR, skipping logged jobs")
    parser.add_argument("--no-model-check", action="store_true",
                        help="do not build the model once on this machine's CPU before starting (for a model only "
                             "the evaluator machines can load)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs CURVE keys)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free one)")
    parser.add_argument("--key", help="the master's CURVE secret key (.key_secret)")
    parser.add_argument("--authorized-keys", help="folder of accepted workers' public keys")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without CURVE keys (trusted networks only)")
    parser.add_argument("--no-local-auth", action="store_true",
                        help="loopback without the per-run keys: any local user's process could then join the run")
    parser.add_argument("--worker-key", help="local workers' CURVE secret key (with --key)")
    parser.add_argument("--server-public-key", help="the master's public key for local workers (with --key)")
    parser.add_argument("--lease-timeout", type=float, default=DEFAULT_LEASE_TIMEOUT_S,
                        help=f"seconds a silent worker keeps its jobs (default {DEFAULT_LEASE_TIMEOUT_S:.0f})")
    parser.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS,
                        help=f"a job failing this often is recorded as failed (default {MAX_ATTEMPTS})")
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    from threedb.sim.cli import run_guarded

    return run_guarded(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
