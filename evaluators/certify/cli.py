"""``threedb certify [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]`` and its
sub-commands ``threedb certify analyze ...`` and ``threedb certify scene ...``.

``threedb certify CONFIG`` and ``threedb certify NAME ...`` coexist: when the first argument after
``certify`` is a name in :data:`SUBCOMMANDS`, the rest is parsed by that
sub-command's parser (a config file of that name is still reachable as ``./analyze``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Optional, Sequence

from threedb.evaluators.job_cli import add_job_options, load_from_args

#: The embedded default config (the shipped quickstart model and held-out dataset).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "certify_quickstart.yaml"

#: ``threedb certify NAME ...``: NAME -> (module with ``build_parser(parser)`` setting ``func``, help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("threedb.evaluators.certify.analyze",
                "certified accuracy of Cohen-format TSV logs (Cohen et al.'s or certify.tsv), one row per log"),
    "scene": ("threedb.evaluators.certify.scene_cli",
              "certified robustness over 3D scene parameters of a threedb run (RUN_DIR)"),
}


class CertifyParser(argparse.ArgumentParser):
    """The ``certify`` parser: a first argument naming a sub-command hands the rest to that sub-command."""

    def parse_known_args(self, args: Optional[Sequence[str]] = None,
                         namespace: Optional[argparse.Namespace] = None) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] in SUBCOMMANDS:
            module, help_text = SUBCOMMANDS[args[0]]
            sub = argparse.ArgumentParser(prog=f"{self.prog} {args[0]}", description=help_text)
            importlib.import_module(module).build_parser(sub)
            return sub.parse_known_args(args[1:], namespace)
        return super().parse_known_args(args, namespace)


def cmd_certify(args: argparse.Namespace) -> int:
    from threedb.evaluators.certify.config import load_certify_config
    from threedb.evaluators.certify.runner import run_certify_job

    config = load_from_args(args, load_certify_config, DEFAULT_CONFIG)
    run_certify_job(config, out=args.out, resume=args.resume, device=args.device)
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.__class__ = CertifyParser   # created by the top-level subparsers; dispatch on the first argument
    parser.description = ("Certify a model on a dataset with randomized smoothing (task: classification: Cohen "
                          "et al.'s CERTIFY; segmentation: SEGCERTIFY with Holm/Bonferroni and baselines; "
                          "equivalence: probabilistic local equivalence) and report: OUT/report.json, "
                          "examples.jsonl, certify.tsv, plots/ (docs/certify.md).")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "sub-commands (threedb certify NAME --help):\n" + "\n".join(
        f"  {name:<9} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items())
    parser.add_argument("config", nargs="?", help=f"certify job config (YAML; default {DEFAULT_CONFIG.name}, the "
                        "shipped quickstart model and dataset), or a sub-command: "
                        + ", ".join(SUBCOMMANDS))
    add_job_options(parser, set_example="smoothing.sigma=0.5")
    parser.set_defaults(func=cmd_certify)
    return parser


__all__ = ["DEFAULT_CONFIG", "SUBCOMMANDS", "CertifyParser", "build_parser",
           "cmd_certify"]
