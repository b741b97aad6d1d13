"""``threedb attack [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from threedb.evaluators.job_cli import add_job_options, load_from_args

#: The embedded default config (the shipped quickstart model and dataset).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "attack_quickstart.yaml"


def cmd_attack(args: argparse.Namespace) -> int:
    from threedb.evaluators.attack.config import load_attack_config
    from threedb.evaluators.attack.runner import run_attack_job

    config = load_from_args(args, load_attack_config, DEFAULT_CONFIG)
    run_attack_job(config, out=args.out, resume=args.resume, device=args.device)
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Attack a model on a dataset with several attacks (FGSM, PGD, APGD-CE/DLR, APGD-T, Square; "
                          "BPDA/EOT for defences) and report the per-example worst case: OUT/report.json, "
                          "examples.jsonl, plots/, grid.png (docs/attacks.md).")
    parser.add_argument("config", nargs="?", help=f"attack job config (YAML; default {DEFAULT_CONFIG.name}, the "
                        "shipped quickstart model and dataset)")
    add_job_options(parser, set_example="threat.eps=4/255")
    parser.set_defaults(func=cmd_attack)
    return parser
