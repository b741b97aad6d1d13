"""``threedb train CONFIG [--resume] [--device D] [--set KEY=VALUE]``: train a classifier or segmenter
(standard or adversarial) on a dataset."""
from __future__ import annotations

import argparse
import sys


def cmd_train(args: argparse.Namespace) -> int:
    from threedb.evaluators.training.config import load_train_config
    from threedb.evaluators.training.loop import train
    from threedb.sim.config import parse_override

    overrides = dict(parse_override(item) for item in args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_train_config(args.config, overrides=overrides)
    card = train(config, resume=args.resume, device=args.device, command=["threedb", "train", *sys.argv[2:]]
                 if sys.argv[1:2] == ["train"] else None)
    acc = card["metrics"].get("test_accuracy")
    shown = "" if acc is None else f"; held-out accuracy {100 * acc:.1f}% on {card['metrics']['test_images']} images"
    print(f"[threedb train] done: {config.schema.output}/model.pt{shown}", file=sys.stderr)
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Train a classifier or segmenter (standard or adversarial) as CONFIG says (see threedb.evaluators.training.config): "
                          "checkpoints every epoch, --resume continues, a model card at the end.")
    parser.add_argument("config", help="training config (YAML)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.epochs=2 (repeatable)")
    parser.set_defaults(func=cmd_train)
    return parser
