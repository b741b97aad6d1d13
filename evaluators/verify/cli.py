"""``threedb verify``, three modes told apart by the arguments:

* ``threedb verify NET.onnx SPEC.vnnlib [--timeout S] [--out RESULT_FILE]``: one VNN-COMP instance; the
  result line on stdout, a one-line summary on stderr, the VNN-COMP result file with ``--out``;
* ``threedb verify --instances instances.csv [--out DIR] [--timeout S] [--resume]``: a benchmark folder;
* ``threedb verify [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]``: the
  dataset job (default ``configs/verify_quickstart.yaml``).

Exit status 0 for any verdict (sat, unsat, timeout, unknown), 2 for bad input (one ``error:`` line
naming the file and the place; the single-instance mode also prints and writes ``error``), 1 when the
verifier itself answers ``error``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from threedb.evaluators.job_cli import add_job_options, load_from_args
from threedb.sim.errors import ThreeDBError

#: The embedded default config (the shipped MNIST network and held-out images).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "verify_quickstart.yaml"
#: The timeout of a single instance when ``--timeout`` is not given (seconds).
DEFAULT_TIMEOUT = 120.0


class UsageError(ThreeDBError, ValueError):
    """Arguments that mix the modes (e.g. ``--set`` with NET SPEC); says which belong where."""


def cmd_instance(args: argparse.Namespace) -> int:
    """One instance: print the result (and write the result file), 0 for a verdict, 2 for bad input."""
    from threedb.evaluators.jobs.output import write_atomic
    from threedb.evaluators.verify.instance import (InstanceError, load_instance, result_text, summary_line,
                                                    verify_instance)
    from threedb.robustness.verification.verifier import VerifierOptions

    net, spec = args.inputs
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    try:
        if not timeout > 0:
            raise InstanceError(f"--timeout must be > 0 seconds, got {timeout:g}")
        instance = load_instance(net, spec)
        result = verify_instance(instance, VerifierOptions(timeout=timeout))
    except InstanceError:
        print("error", flush=True)
        if args.out:
            write_atomic(Path(args.out), result_text("error"))
        raise
    print(result.status, flush=True)
    if args.out:
        write_atomic(Path(args.out), result_text(result.status, result.counterexample, result.output))
    print(f"[threedb verify] {summary_line(instance, result)}", file=sys.stderr)
    return 1 if result.status == "error" else 0   # the verifier itself failed: not a verdict


def cmd_benchmark(args: argparse.Namespace) -> int:
    from threedb.evaluators.verify.benchmark import run_benchmark

    run_benchmark(args.instances, args.out, timeout=args.timeout, resume=args.resume)
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from threedb.evaluators.verify.config import load_verify_config
    from threedb.evaluators.verify.runner import run_verify_job

    config = load_from_args(args, load_verify_config, DEFAULT_CONFIG)
    run_verify_job(config, out=args.out, resume=args.resume, device=args.device)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Pick the mode from the arguments; options that do not belong to it are refused."""
    inputs = list(args.inputs)
    job_only = [flag for flag, given in (("--device", args.device is not None), ("--seed", args.seed is not None),
                                         ("--set", bool(args.set))) if given]
    if args.instances is not None:
        if inputs or job_only:
            raise UsageError("--instances runs a benchmark folder: give no NET/SPEC/CONFIG and none of "
                               + ", ".join(job_only or ["the positional arguments"]))
        return cmd_benchmark(args)
    if len(inputs) == 2:
        if job_only or args.resume:
            raise UsageError(f"threedb verify NET SPEC verifies one instance: {', '.join(job_only or ['--resume'])} "
                               "applies to a job config (threedb verify CONFIG) only")
        return cmd_instance(args)
    if len(inputs) > 2:
        raise UsageError(f"threedb verify takes NET.onnx SPEC.vnnlib, or one CONFIG, not {len(inputs)} arguments")
    if inputs and inputs[0].lower().endswith(".onnx"):
        raise UsageError(f"{inputs[0]}: an ONNX network needs its specification: threedb verify NET.onnx "
                           "SPEC.vnnlib")
    if args.timeout is not None:
        raise UsageError("--timeout applies to NET SPEC and --instances; a job config sets "
                           "verification.timeout (--set verification.timeout=S)")
    args.config = inputs[0] if inputs else None
    return cmd_job(args)


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Complete verification (bounds, branch and bound, MILP; sat answers confirmed on the original model).\n"
        "Three modes:\n"
        "  threedb verify NET.onnx SPEC.vnnlib [--timeout S] [--out RESULT_FILE]\n"
        "      one VNN-COMP instance: prints sat/unsat/timeout/unknown/error, writes the result file\n"
        "  threedb verify --instances instances.csv [--out DIR] [--timeout S] [--resume]\n"
        "      a VNN-COMP benchmark folder: DIR/results.csv, summary.json, counterexamples/\n"
        "  threedb verify [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]\n"
        "      a classifier on dataset images at an L-inf eps: OUT/report.json, examples.jsonl, plots/\n"
        "(docs/verify.md). Exit status 0 for a verdict, 2 for bad input.")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.usage = ("%(prog)s NET.onnx SPEC.vnnlib [--timeout S] [--out FILE]\n"
                    "       %(prog)s --instances CSV [--out DIR] [--timeout S] [--resume]\n"
                    "       %(prog)s [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]")
    parser.add_argument("inputs", nargs="*", metavar="NET SPEC | CONFIG",
                        help=f"an ONNX network and a VNNLIB specification, or a verify job config (YAML; default "
                        f"{DEFAULT_CONFIG.name}, the shipped MNIST network and images)")
    parser.add_argument("--instances", metavar="CSV", help="a VNN-COMP instances.csv (onnx,vnnlib,timeout rows)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help=f"seconds per instance (NET SPEC: default {DEFAULT_TIMEOUT:g}; --instances: caps each "
                        "row's timeout)")
    add_job_options(parser, set_example="verification.eps=0.05")
    for action in parser._actions:
        if action.dest == "out":
            action.help = "NET SPEC: the result file; --instances: the output directory; CONFIG: the output " \
                          "directory (default: the config's output:)"
        elif action.dest == "resume":
            action.help = "continue the job or benchmark already in the output directory"
    parser.set_defaults(func=cmd_verify)
    return parser


__all__ = ["DEFAULT_CONFIG", "DEFAULT_TIMEOUT", "UsageError", "build_parser", "cmd_verify"]
