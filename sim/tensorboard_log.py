"""The ``tensorboard`` logger of a run (``logging.loggers: [..., tensorboard]``, or the original 3DB's
``threedb.result_logging.tb_logger``): TensorBoard event files under ``RUN_DIR/tensorboard/``.

* ``accuracy/running``: the accuracy of the evaluated jobs so far, at each ``every``-th recorded job;
  ``jobs/failed`` the failed jobs so far;
* ``failures/<job id>``: the images of misclassified jobs (the first ``max_images``);
* at the end, ``accuracy_by_parameter/<control.param>`` (one point per bin of the parameter, step =
  bin index, bins as in the run's summary) and ``accuracy_by_object/<uid>``, plus the run's hparams
  (render and policy settings) with its final accuracy, for TensorBoard's HPARAMS tab.

``details.log`` stays the run's record; this is a view of it for TensorBoard users.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: Where the event files go, inside the run directory.
TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger:
    """Writes a run's progress to TensorBoard as rows are recorded; :meth:`close` writes the summaries."""

    def __init__(self, run_dir: str | Path, *, hparams: Mapping[str, Any], already: int = 0, every: int = 8,
                 max_images: int = 64) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))
        self.hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        self.every, self.max_images = max(1, every), max_images
        self.count = already            # a resumed run continues the step count
        self.evaluated = self.correct = self.failed = self.images = 0
        self.rows: list[dict[str, Any]] = []   # what the end-of-run summaries need, per row

    def log(self, row: Mapping[str, Any], rgb: np.ndarray | None) -> None:
        """One recorded row of ``details.log`` (with its RGB image when the job rendered)."""
        self.count += 1
        correct = row.get("is_correct")
        if row.get("status") != "ok":
            self.failed += 1
        elif isinstance(correct, bool):
            self.evaluated += 1
            self.correct += int(correct)
            if not correct and rgb is not None and self.images < self.max_images:
                self.writer.add_image(f"failures/{row['id']}", np.asarray(rgb), self.count, dataformats="HWC")
                self.images += 1
        self.rows.append({key: row.get(key) for key in ("status", "is_correct", "object_uid", "environment", "model",
                                                       "render_args")})
        if self.count % self.every == 0:
            self._write_running()

    def _write_running(self) -> None:
        if self.evaluated:
            self.writer.add_scalar("accuracy/running", self.correct / self.evaluated, self.count)
        self.writer.add_scalar("jobs/failed", self.failed, self.count)

    def close(self) -> None:
        """The final running point, the per-parameter and per-object accuracies and the hparams."""
        from threedb.sim.run.progress import summarize_rows

        self._write_running()
        if self.rows:
            summary = summarize_rows(self.rows)
            for param, bins in summary["parameters"].items():
                for i, b in enumerate(bins):
                    if b["accuracy"] is not None:
                        self.writer.add_scalar(f"accuracy_by_parameter/{param}", b["accuracy"], i)
            for uid, stats in summary["objects"].items():
                if stats["accuracy"] is not None:
                    self.writer.add_scalar(f"accuracy_by_object/{uid}", stats["accuracy"], 0)
            accuracy = summary["overall"]["accuracy"]
            self.writer.add_hparams(self.hparams, {"hparam/accuracy": accuracy if accuracy is not None else -1.0,
                                                   "hparam/jobs": float(len(self.rows))}, run_name=".")
        self.writer.close()


__all__ = ["TENSORBOARD_DIR", "TensorBoardLogger"]
