"""``threedb certify analyze LOG.tsv [LOG.tsv ...] [--radii R ...] [--json FILE] [--plot FILE]``: certified
accuracy of Cohen-format certification logs (theirs or ``certify.tsv`` of ``threedb certify``).

Certified accuracy at r = the share of **all** rows predicted correctly (``correct == 1``) with
``radius >= r``; abstentions (``predict == -1``) count as wrong. One table row per log on stdout.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from threedb.evaluators.certify.tsv import LogError, read_log

#: Radii of the table when --radii is not given (Cohen et al.'s tables use 0 to 1.0 for CIFAR-10 and
#: 0 to 3.0 in steps of 0.5 for ImageNet; these cover both up to 2.0).
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def analyze_logs(paths: Sequence[str | Path], radii: Sequence[float] = DEFAULT_RADII) -> dict[str, Any]:
    """``{"radii": [...], "logs": [{"file", "rows", "abstain_rate", "certified_accuracy": [...]}]}``."""
    from threedb.robustness.smoothing import certified_accuracy

    radii = [float(r) for r in radii]
    logs = []
    for path in paths:
        rows = read_log(path)
        if not rows:
            raise LogError(f"{path}: the log has a header but no rows")
        acc = certified_accuracy([r.radius for r in rows], [r.correct for r in rows], radii)
        logs.append({"file": str(path), "rows": len(rows),
                     "abstain_rate": sum(r.predict == -1 for r in rows) / len(rows),
                     "certified_accuracy": [round(float(a), 12) for a in acc],
                     "_series": ([r.radius for r in rows], [r.correct for r in rows])})
    return {"radii": radii, "logs": logs}


def format_table(result: dict[str, Any]) -> str:
    """The analysis as an aligned text table: log, rows, abstain rate, certified accuracy per radius."""
    names = [Path(log["file"]).name for log in result["logs"]]
    width = max([len("log"), *map(len, names)])
    head = f"{'log':<{width}}  {'rows':>5}  {'abstain':>7}" + "".join(f"  {'r=' + format(r, 'g'):>7}"
                                                                       for r in result["radii"])
    lines = [head]
    for name, log in zip(names, result["logs"]):
        lines.append(f"{name:<{width}}  {log['rows']:>5}  {log['abstain_rate']:>7.3f}"
                     + "".join(f"  {a:>7.3f}" for a in log["certified_accuracy"]))
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    radii = args.radii if args.radii else DEFAULT_RADII
    if any(r < 0 for r in radii):
        raise LogError(f"--radii must be >= 0, got {radii}")
    result = analyze_logs(args.logs, sorted(radii))
    print(format_table(result))
    if args.json:
        data = {"radii": result["radii"], "logs": [{k: v for k, v in log.items() if not k.startswith("_")}
                                                   for log in result["logs"]]}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        from threedb.evaluators.certify.report import certified_curve

        fig = certified_curve({Path(log["file"]).stem: log["_series"] for log in result["logs"]},
                              marks=result["radii"], title="certified accuracy")
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120, metadata={"Software": None} if not str(args.plot).endswith(".svg")
                    else {"Date": None, "Creator": None})
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Certified accuracy of Cohen-format TSV logs (idx label predict radius correct time; "
                          "Cohen et al.'s own or threedb certify's certify.tsv): at each radius r, the share of "
                          "all rows with correct = 1 and radius >= r. One row per log.")
    parser.add_argument("logs", nargs="+", metavar="LOG.tsv", help="certification logs")
    parser.add_argument("--radii", nargs="+", type=float, metavar="R",
                        help=f"radii of the table (default {' '.join(format(r, 'g') for r in DEFAULT_RADII)})")
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    parser.add_argument("--plot", metavar="FILE", help="also plot the certified-accuracy curves (.png or .svg)")
    parser.set_defaults(func=cmd_analyze)
    return parser


__all__ = ["DEFAULT_RADII", "analyze_logs", "build_parser", "cmd_analyze", "format_table"]
