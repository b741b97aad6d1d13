"""``threedb certify scene RUN_DIR [--out DIR] [--alpha A] [--max-n N] [--overwrite]``: certified robustness over
3D scene parameters from a run made with the ``smoothing`` policy (docs/certify_scene.md).

``threedb certify`` (:mod:`threedb.evaluators.certify.cli`) hands ``scene ...`` to :func:`build_parser`;
``python -m threedb.evaluators.certify.scene_cli RUN_DIR`` runs it alone.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def cmd_scene(args: argparse.Namespace) -> int:
    """Analyse the run, write the report directory, print the summary (stderr) and the headline (stdout)."""
    import json

    from threedb.evaluators.certify.scene import certify_scene

    report, _, out_dir = certify_scene(args.run_dir, out=args.out, alpha=args.alpha, max_n=args.max_n,
                                       overwrite=args.overwrite)
    for line in report["summary"]:
        print(line, file=sys.stderr)
    print(f"wrote {out_dir / 'report.json'} (threedb dashboard {args.run_dir} {out_dir})", file=sys.stderr)
    print(json.dumps({"out": str(out_dir), "headline": report["headline"]}))
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``threedb certify scene``; sets ``func``."""
    parser.description = ("Certify the smoothed classifier g(theta) = argmax_c P(f(render(theta + e)) = c) at every "
                          "base point of a `threedb run` made with `policy: {type: smoothing}`: per (object, "
                          "environment, base point) the prediction (or abstain), correctness, the Clopper-Pearson "
                          "bound pA and the certified radius, in normalised units and in each parameter's own "
                          "units. Writes a robustness report (report.json, examples.jsonl, plots/) for the "
                          "dashboard's Robustness tab.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (details.log, config.resolved.yaml)")
    parser.add_argument("--out", help="report directory (default RUN_DIR/certify_scene)")
    parser.add_argument("--alpha", type=float, help="1 - alpha is the confidence (default: the policy's alpha)")
    parser.add_argument("--max-n", type=int, dest="max_n",
                        help="use only the first N estimation samples of each base point (default: all n)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier certify-scene report in --out (recomputed from the run)")
    parser.set_defaults(func=cmd_scene)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from threedb.sim.cli import run_guarded

    args = build_parser(argparse.ArgumentParser(prog="threedb certify scene")).parse_args(argv)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
