"""``threedb attack [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]``."""
from __future__ import annotations

import argparse
from pathlib import Path

#: The embedded default config (the shipped quickstart model and dataset).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "attack_quickstart.yaml"


def cmd_attack(args: argparse.Namespace) -> int:
    from threedb.evaluators.attack.config import load_attack_config
    from threedb.evaluators.attack.runner import run_attack_job
    from threedb.sim.config import parse_override

    overrides = dict(parse_override(item) for item in args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_attack_config(args.config or DEFAULT_CONFIG, overrides=overrides)
    run_attack_job(config, out=args.out, resume=args.resume, device=args.device)
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Attack a model on a dataset with several attacks (FGSM, PGD, APGD-CE/DLR, APGD-T, Square; "
                          "BPDA/EOT for defences) and report the per-example worst case: OUT/report.json, "
                          "examples.jsonl, plots/, grid.png (docs/attacks.md).")
    parser.add_argument("config", nargs="?", help=f"attack job config (YAML; default {DEFAULT_CONFIG.name}, the "
                        "shipped quickstart model and dataset)")
    parser.add_argument("--out", help="output directory (default: the config's output:)")
    parser.add_argument("--resume", action="store_true", help="continue the job already in the output directory")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's device:)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set threat.eps=4/255 (repeatable)")
    parser.set_defaults(func=cmd_attack)
    return parser
