"""``threedb dataset export RUN_DIR --out DIR``: a run's images as a versioned image-folder dataset;
``threedb dataset from-idx IMAGES LABELS --out DIR [--range A:B]``: the same from an IDX pair (MNIST)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from threedb.evaluators.datasets.errors import DatasetError


def cmd_export(args: argparse.Namespace) -> int:
    from threedb.evaluators.datasets.export import export_run, read_class_list

    classes = None
    if args.classes and args.classes_file:
        raise DatasetError(args.classes_file, "give --classes or --classes-file, not both")
    if args.classes:
        classes = read_class_list(args.classes, "--classes")
    elif args.classes_file:
        path = Path(args.classes_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise DatasetError(path, f"cannot read the class list ({exc.strerror})") from None
        classes = read_class_list(text, str(path))
    header = export_run(args.run_dir, args.out, classes=classes, include_failed=args.include_failed == "yes")
    counts = header["counts"]
    for name, n in counts["per_class"].items():
        if n == 0:
            print(f"warning: class {name!r} has no samples (torchvision ImageFolder needs allow_empty=True)",
                  file=sys.stderr)
    skipped = ", ".join(f"{n} {why}" for why, n in counts["skipped"].items() if n) or "none"
    passes = ", ".join(header["passes"]) or "none"
    print(f"wrote {counts['samples']} samples of {len(header['classes'])} classes to {args.out} "
          f"(passes: {passes}; skipped: {skipped})")
    return 0


def cmd_from_idx(args: argparse.Namespace) -> int:
    from threedb.evaluators.datasets.idx import parse_range, read_idx, write_idx_dataset

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    total = len(read_idx(args.labels))
    start, stop = parse_range(args.range, total)
    header = write_idx_dataset(args.images, args.labels, args.out, start=start, stop=stop, classes=classes)
    counts = header["counts"]
    print(f"wrote {counts['samples']} samples (IDX indices {start}..{stop - 1}) of {len(header['classes'])} "
          f"classes to {args.out}")
    return 0


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``threedb dataset``: subcommands on datasets (``export``, ``from-idx``)."""
    sub = parser.add_subparsers(dest="dataset_command", required=True, metavar="SUBCOMMAND")
    export = sub.add_parser(
        "export", help="export a run directory's images as a versioned image-folder dataset",
        description="Write DIR/dataset.json, DIR/samples.jsonl and DIR/images/<class>/<id>.png (a torchvision "
                    "ImageFolder tree), plus masks/ and depth/ when the run logged them. See docs/datasets.md.")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (threedb run --out)")
    export.add_argument("--out", required=True, metavar="DIR", help="new (or empty) output folder")
    export.add_argument("--classes", metavar="UID,UID,...",
                        help="object uids to export, in label order (default: all, sorted by class folder)")
    export.add_argument("--classes-file", metavar="FILE",
                        help="the same as a file: one uid a line (# comments) or a JSON list")
    export.add_argument("--include-failed", choices=("no", "yes"), default="no",
                        help="also export failed rows that kept an image (default: no, they are counted)")
    export.set_defaults(func=cmd_export)

    idx = sub.add_parser(
        "from-idx", help="turn an IDX image/label pair (MNIST) into a versioned image-folder dataset",
        description="Write DIR/dataset.json, DIR/samples.jsonl and DIR/images/<class>/<index>.png (8-bit "
                    "grayscale) from an IDX image file (N x H x W uint8) and its label file, gzip or not. "
                    "Sample ids are the IDX indices. See docs/training.md (MNIST).")
    idx.add_argument("images", metavar="IMAGES", help="IDX image file, e.g. t10k-images-idx3-ubyte.gz")
    idx.add_argument("labels", metavar="LABELS", help="IDX label file, e.g. t10k-labels-idx1-ubyte.gz")
    idx.add_argument("--out", required=True, metavar="DIR", help="new (or empty) output folder")
    idx.add_argument("--range", metavar="START:STOP", help="only the examples START..STOP-1 (default: all)")
    idx.add_argument("--classes", metavar="NAME,NAME,...",
                     help="class names by label value (default: the label values, 0, 1, ...)")
    idx.set_defaults(func=cmd_from_idx)
    return parser
