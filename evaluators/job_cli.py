"""The command-line options every robustness job shares (``threedb attack``, ``threedb certify``):
``[CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE ...]``.

Outside :mod:`threedb.evaluators.jobs` on purpose: every command's parser is built at start-up, and
importing that package loads pydantic and the config loader (~30 ms on ``threedb --help``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from threedb.evaluators.jobs.config import JobConfig


def add_job_options(parser: argparse.ArgumentParser, *, set_example: str) -> None:
    """``--out``, ``--resume``, ``--device``, ``--seed`` and ``--set`` (``set_example``: e.g.
    ``threat.eps=4/255``, shown in the help)."""
    parser.add_argument("--out", help="output directory (default: the config's output:)")
    parser.add_argument("--resume", action="store_true", help="continue the job already in the output directory")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's device:)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {set_example} (repeatable)")


def load_from_args(args: argparse.Namespace, load: Callable[..., JobConfig[Any]],
                   default_config: Path) -> JobConfig[Any]:
    """The job config named by ``args.config`` (else ``default_config``) with ``--set`` and ``--seed``
    applied, loaded by the job's ``load(path, overrides=...)``."""
    from threedb.sim.config import parse_override

    overrides: Mapping[str, Any] = dict(parse_override(item) for item in args.set)
    if args.seed is not None:
        overrides = {**overrides, "seed": args.seed}
    return load(args.config or default_config, overrides=overrides)


__all__ = ["add_job_options", "load_from_args"]
