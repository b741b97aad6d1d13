"""``threedb evaluator --connect tcp://HOST:PORT``: runs the model and the evaluator on batches of renders.

The master's welcome carries the ``inference:`` and ``evaluation:`` sections and the folder their
relative paths resolve against (so the model, weights and label/class maps must be readable at
those paths on this machine). The worker asks for a batch (frames from any render worker), runs
``LoadedModel.predict`` then ``Evaluator.evaluate`` (heartbeating meanwhile) and sends one row of
outputs per job back with its next request.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from typing import Any, Sequence

import numpy as np

from threedb.sim.run.common import Connection, MasterGone, add_connect_args, worker_main

log = logging.getLogger(__name__)


def load(welcome: dict[str, Any], device: str | None) -> tuple[Any, Any]:
    from threedb.evaluators.base import load_evaluator
    from threedb.evaluators.models import load_model

    base = welcome.get("base_dir")
    model = load_model(welcome["inference"], base_dir=base, file=welcome.get("config_file"), device=device)
    evaluator = load_evaluator(welcome["evaluation"], base_dir=base, file=welcome.get("config_file"))
    evaluator.setup(model)
    return model, evaluator


def evaluate_batch(model: Any, evaluator: Any, items: list[dict[str, Any]],
                   arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    from threedb.sim.store import _jsonable

    images = np.stack([arrays[f"{i}/rgb"] for i in range(len(items))])
    metas = []
    for i, item in enumerate(items):
        meta = dict(item.get("meta") or {})
        meta["object_uid"] = item["object_uid"]
        for name in getattr(evaluator, "needs", ()):
            if f"{i}/{name}" in arrays:
                meta[name] = arrays[f"{i}/{name}"]
        metas.append(meta)
    outputs = model.predict(images)
    return [_jsonable(row) for row in evaluator.evaluate(outputs, metas)]


def serve(args: argparse.Namespace) -> int:
    conn = Connection(args, "evaluator")
    try:
        welcome, _ = conn.request({"type": "hello"}, expect=("welcome",))
        try:
            model, evaluator = conn.busy(lambda: load(welcome, args.device))
        except MasterGone:
            raise
        except Exception as exc:
            conn.send({"type": "fatal", "error": f"{type(exc).__name__}: {exc}"})
            raise
        batch_size = int(welcome.get("batch_size") or 16)
        message: dict[str, Any] = {"type": "ready", "batch_size": batch_size}
        while True:
            reply, arrays = conn.request(message, expect=("batch", "wait"))
            message = {"type": "ready", "batch_size": batch_size}
            if reply["type"] == "wait":
                time.sleep(float(reply.get("retry_s", 0.1)))
                continue
            items = reply["items"]
            ids = [item["job_id"] for item in items]
            try:
                rows = conn.busy(lambda: evaluate_batch(model, evaluator, items, arrays), batch=len(ids))
            except MasterGone:
                raise
            except Exception as exc:
                log.warning("evaluation of %d jobs failed: %s", len(ids), exc)
                message.update({"type": "eval_failed", "job_ids": ids, "error": f"{type(exc).__name__}: {exc}",
                                "trace": traceback.format_exc()[-4000:]})
                continue
            message.update({"type": "outputs", "results": [{"job_id": j, "outputs": r} for j, r in zip(ids, rows)]})
    except MasterGone as exc:
        log.info("evaluator %s stops: %s", conn.wid, exc)
        return 0
    finally:
        conn.close()


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="threedb evaluator", description=__doc__.splitlines()[0])
    add_connect_args(parser)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's, else auto)")
    parser.set_defaults(func=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return worker_main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
