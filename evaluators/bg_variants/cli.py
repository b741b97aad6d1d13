"""``threedb bg-variants [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from threedb.evaluators.job_cli import add_job_options, load_from_args

#: The embedded default config (the shipped quickstart model and held-out renders with exact masks).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bg_variants_quickstart.yaml"


def cmd_bg_variants(args: argparse.Namespace) -> int:
    from threedb.evaluators.bg_variants.config import load_bg_variants_config
    from threedb.evaluators.bg_variants.runner import run_bg_variants_job

    config = load_from_args(args, load_bg_variants_config, DEFAULT_CONFIG)
    run_bg_variants_job(config, out=args.out, resume=args.resume, device=args.device)
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("ImageNet-9-style background variants of a dataset (ORIGINAL, ONLY-BG-B, ONLY-BG-T, NO-FG, "
                          "ONLY-FG, MIXED-SAME, MIXED-RAND, MIXED-NEXT; exact masks or GrabCut from boxes), each "
                          "written as an ImageDataset with a manifest, and models scored on them: accuracy per "
                          "variant, BG-GAP, per-image categories, adversarial backgrounds: OUT/report.json, "
                          "examples.jsonl, manifest.jsonl, variants/, plots/ (docs/backgrounds.md).")
    parser.add_argument("config", nargs="?", help=f"background-variant job config (YAML; default "
                        f"{DEFAULT_CONFIG.name}, the shipped quickstart model and held-out renders)")
    add_job_options(parser, set_example="adversarial.budget=10")
    parser.set_defaults(func=cmd_bg_variants)
    return parser
