"""``threedb companion export RUN_DIR --ids ID [ID ...] --out DIR``."""
from __future__ import annotations

import argparse
import sys


def cmd_export(args: argparse.Namespace) -> int:
    from threedb.companion.export import export_ids

    def progress(job_id: str, step: str) -> None:
        print(f"[companion] {step}: {job_id}", file=sys.stderr, flush=True)

    manifest = export_ids(args.run_dir, args.ids, args.out, on_progress=progress)
    for job_id in dict.fromkeys(args.ids):
        check = manifest["renders"][job_id]["rerender_check"]
        if check.get("logged_image") and not check.get("identical"):
            print(f"warning: {job_id}: the re-render differs from the logged image "
                  f"(max abs diff {check.get('max_abs_diff')})", file=sys.stderr)
    print(f"exported {len(set(args.ids))} render(s) to {args.out} (index: {args.out}/manifest.json)")
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``companion`` and its ``export`` subcommand to ``parser``."""
    parser.description = "Physical-recreation companion: export renders with overlays, poses and USDZ."
    sub = parser.add_subparsers(dest="companion_command", required=True, metavar="SUBCOMMAND")
    export = sub.add_parser(
        "export", help="export renders of a run: render, edge overlay, intrinsics and poses, USDZ",
        description="Re-render IDS of RUN_DIR (deterministic) and write, per id, DIR/<id>/render.png, "
                    "overlay.png, mask.png, pose.json and object.usdz, plus DIR/manifest.json "
                    "(see docs/companion.md).")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `threedb run`")
    export.add_argument("--ids", nargs="+", required=True, metavar="ID", help="job ids (details.log's `id`)")
    export.add_argument("--out", required=True, metavar="DIR", help="export folder (created; ids are added to it)")
    export.set_defaults(func=cmd_export)
    return parser
