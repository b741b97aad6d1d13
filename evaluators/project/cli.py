"""``threedb project [CONFIG] [--out DIR] [--resume] [--device D] [--seed S] [--set KEY=VALUE]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from threedb.evaluators.job_cli import add_job_options, load_from_args

#: The embedded default config (the shipped held-out renders, split in two).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "project_quickstart.yaml"


def cmd_project(args: argparse.Namespace) -> int:
    from threedb.evaluators.project.config import load_project_config
    from threedb.evaluators.project.runner import run_project_job

    config = load_from_args(args, load_project_config, DEFAULT_CONFIG)
    run_project_job(config, out=args.out, resume=args.resume, device=args.device)
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Project a target dataset onto groups of a source dataset (classes, k-means clusters or "
                          "render groups): the mixture weights minimising the unbiased MMD², per class, a resampled "
                          "training set drawn by them and a threedb run config rendering more of the heavy render "
                          "groups: OUT/report.json, examples.jsonl, plots/weights.png, resampled/, render_more.yaml "
                          "(docs/projection.md).")
    parser.add_argument("config", nargs="?", help=f"projection job config (YAML; default {DEFAULT_CONFIG.name}, the "
                        "shipped held-out renders split into target and source)")
    add_job_options(parser, set_example="groups.bins.zoom_factor=3")
    parser.set_defaults(func=cmd_project)
    return parser
