"""``threedb dashboard DIR [DIR ...] [--host H] [--port P] [--tls-cert F --tls-key F]``: serve the results
dashboard over run directories and robustness reports (directories holding a job's ``report.json``)."""
from __future__ import annotations

import argparse
import socket
import ssl
import sys
from pathlib import Path

from threedb.sim.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def open_runs(paths: list[str]) -> list:
    """The runs to serve, in order (ResultsError naming the file for a directory that is not a run)."""
    from threedb.dashboard.loader import Run

    runs = [Run(path, index=i) for i, path in enumerate(paths)]
    for run in runs:
        if run.skipped:
            reasons = ", ".join(f"{n} {why}" for why, n in run.skipped_reasons.items())
            print(f"warning: {run.details}: skipped {run.skipped} corrupt line(s) ({reasons})", file=sys.stderr)
        if run.bad_values:
            print(f"warning: {run.details}: {run.bad_values} row(s) with NaN/Infinity values (treated as missing)",
                  file=sys.stderr)
    return runs


def open_dirs(paths: list[str]) -> tuple[list, list]:
    """``(runs, reports)``: each directory holding a robustness job's ``report.json`` (or a job's output
    still running) is a report, any other a run; each list is numbered in command-line order. A
    malformed report.json is a ReportError naming it."""
    from threedb.dashboard.reports import Report, is_report_dir

    report_paths = [p for p in paths if is_report_dir(p)]
    runs = open_runs([p for p in paths if p not in report_paths])
    reports = [Report(p, index=i) for i, p in enumerate(report_paths)]
    for report in reports:
        for problem in report.problems:
            print(f"warning: {problem} (not served)", file=sys.stderr)
    return runs, reports


def _check_free(host: str, port: int) -> None:
    """One clear error when the address is taken (rather than uvicorn's log line and exit)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}", key="--host", value=host) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", key="--port", value=port) from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from threedb.dashboard.server import create_app

    if not 1 <= args.port <= 65535:
        raise ConfigError("must be a TCP port (1..65535)", key="--port", value=args.port)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("give both --tls-cert and --tls-key (or neither)", key="--tls-cert" if args.tls_key else "--tls-key")
    for key, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if value and not Path(value).is_file():
            raise ConfigError("no such file", key=key, value=value)
    runs, reports = open_dirs(args.run_dirs)
    _check_free(args.host, args.port)
    companion = [Path(args.companion_dir) / f"{run.index}-{run.name}" for run in runs] if args.companion_dir else None
    hosts = ["*"] if args.host not in LOOPBACK else list(LOOPBACK)
    if args.host not in LOOPBACK:
        print(f"warning: serving on {args.host}: anyone who can reach this port can read these runs' results",
              file=sys.stderr)
    app = create_app(runs, allowed_hosts=hosts, companion_dirs=companion, reports=reports)
    for run in runs:
        print(f"run {run.index}: {run.path} ({len(run)} rows)", file=sys.stderr)
    for report in reports:
        state = f"{report.data['job']}: {report.data['title']}" if report.data else "no report.json yet"
        print(f"report {report.index}: {report.path} ({state})", file=sys.stderr)
    scheme = "https" if args.tls_cert else "http"
    print(f"dashboard at {scheme}://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot use this certificate and key: {exc}", key="--tls-cert", value=args.tls_cert) from None
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``threedb dashboard``."""
    parser.description = ("Explore run directories (threedb or original 3DB logs) in the browser, live while "
                          "runs are still writing: heat maps, failure modes, per-object and per-environment "
                          "analysis, surface heat maps, run comparison, and the companion phone page; and "
                          "robustness reports (attack, certify, ... output directories) side by side.")
    parser.add_argument("run_dirs", nargs="+", metavar="DIR",
                        help="run directories (with details.log) and robustness job outputs (with report.json)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8001, help="TCP port (default 8001)")
    parser.add_argument("--companion-dir", metavar="DIR",
                        help="where companion exports live and are made (DIR/<index>-<run name>); "
                             "default RUN_DIR/companion")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve https with this certificate (PEM); phones allow the camera on https only")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.set_defaults(func=cmd_dashboard)
    return parser
