"""The ``threedb`` command line."""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Sequence

from threedb.sim.errors import ThreeDBError, printable


def _version() -> str:
    try:
        return version("threedb")
    except PackageNotFoundError:
        return "unknown"


def cmd_render(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from threedb.sim.config import load_config, parse_override
    from threedb.sim.experiment import prepare
    from threedb.sim.preview import render_preview

    overrides = dict(parse_override(item) for item in args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    experiment = load_config(args.config, overrides=overrides)
    prepared = prepare(experiment)
    for note in experiment.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"rendering {args.n} preview scenes of {args.config}: {len(prepared.objects)} objects x "
          f"{len(prepared.environments)} environments, {prepared.space.ndim} free control parameters",
          file=sys.stderr)
    with tqdm(total=args.n, unit="img", desc="render", file=sys.stderr) as bar:
        manifest = render_preview(prepared, args.out, args.n,
                                  on_progress=lambda done, total: bar.update(done - bar.n))
    failed = [r for r in json.loads(manifest.read_text())["renders"] if "error" in r]
    for record in failed:
        print(f"failed: {record['id']}: {record['error']}", file=sys.stderr)
    print(f"wrote {args.n - len(failed)} renders to {Path(args.out)} (index: {manifest})"
          + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def cmd_controls(args: argparse.Namespace) -> int:
    from threedb.controls.base import SceneControl
    from threedb.controls.registry import available_controls, import_control

    for name, ref in sorted(available_controls().items()):
        try:
            cls = import_control(ref)
        except Exception as exc:  # a broken plugin must not hide the others
            print(f"{name}  [cannot load {ref}: {exc}]\n")
            continue
        kind = "scene" if issubclass(cls, SceneControl) else "image"
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        print(f"{name} ({kind} control, {ref})")
        print(textwrap.fill(summary, width=100, initial_indent="    ", subsequent_indent="    "))
        for p in cls.params:
            print(f"    {p.name:<16} {p.kind:<6} default {p.default!r:<8} domain {p.describe_domain():<24} {p.doc}")
        print()
    return 0


#: Subcommands living in other subpackages: (name, module with ``build_parser(parser)``, help).
COMMAND_MODULES: list[tuple[str, str, str]] = [
    ("companion", "threedb.companion.cli", "export renders with edge overlays, poses and USDZ for physical recreation"),
    ("dashboard", "threedb.dashboard.cli", "explore run results in the browser (live while runs write)"),
    ("dataset", "threedb.evaluators.datasets.cli", "export a run's images (or an MNIST-style IDX pair: from-idx) as a versioned image-folder dataset"),
    ("train", "threedb.evaluators.training.cli", "train a classifier or segmenter, standard or adversarial (checkpoints, resume, model card)"),
    ("attack", "threedb.evaluators.attack.cli", "attack a model on a dataset (FGSM, PGD, APGD, Square; worst case) and report"),
    ("certify", "threedb.evaluators.certify.cli", "certify a model with randomized smoothing (classification, segmentation, local equivalence); analyze Cohen-format logs"),
    ("verify", "threedb.evaluators.verify.cli", "complete verification (bounds + MILP): a VNN-COMP instance, a benchmark folder, or a classifier on a dataset"),
    ("bg-variants", "threedb.evaluators.bg_variants.cli", "background variants (ImageNet-9 style) of a dataset as ImageDatasets; accuracy per variant, BG-GAP, adversarial backgrounds"),
    ("project", "threedb.evaluators.project.cli", "project a dataset onto source groups (MMD mixture weights): weights, a resampled set, render-more config"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="threedb", description="Probe computer-vision models in simulation with Blender renders.")
    parser.add_argument("--version", action="version", version=f"threedb {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser("render", help="render N scenes of a config to PNG (+ lossless passes) for a quick look",
                            description="Render N scenes of CONFIG (random control values, seeded) into DIR: "
                                        "<id>_rgb.png, <id>_mask.png, <id>_instance.png, <id>_depth.exr, "
                                        "<id>_uv.exr, <id>_points.ply as configured, and preview.json.")
    render.add_argument("config", help="experiment config (YAML)")
    render.add_argument("--out", required=True, help="output folder")
    render.add_argument("-n", type=int, default=8, help="number of scenes (default 8)")
    render.add_argument("--seed", type=int, help="override the config's seed")
    render.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set render.samples=4 (repeatable)")
    render.set_defaults(func=cmd_render)

    controls = sub.add_parser("controls", help="list every available control with its parameters")
    controls.set_defaults(func=cmd_controls)

    from threedb.sim.run import evaluator_worker, local, render_worker

    local.build_parser(sub.add_parser(
        "run", help="run an experiment: render, evaluate and log (master + local workers)"))
    render_worker.build_parser(sub.add_parser(
        "worker", help="a render worker joining a run's master (--connect tcp://HOST:PORT)"))
    evaluator_worker.build_parser(sub.add_parser(
        "evaluator", help="an evaluator worker joining a run's master (--connect tcp://HOST:PORT)"))

    from threedb.sim.transport import add_keys_command  # `threedb keys`: CURVE keys for remote workers

    add_keys_command(sub)
    for name, module, help_text in COMMAND_MODULES:
        importlib.import_module(module).build_parser(sub.add_parser(name, help=help_text))
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C (workers stopped, logged results kept)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command: a :class:`ThreeDBError` or an :class:`OSError` (path and cause) becomes one ``error:``
    line and exit status 2; Ctrl-C, SIGTERM and SIGHUP unwind the command the same way (its cleanup stops
    any workers) and exit with ``128 + signal`` (130, 143, 129)."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        return func(args)
    except ThreeDBError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:   # a file operation no command anticipated (e.g. a full disk): still one line
        from threedb.sim.store import describe_os_error

        print(f"error: {printable(describe_os_error(exc, 'a file'))}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"terminated ({exc})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
