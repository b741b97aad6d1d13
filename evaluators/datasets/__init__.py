"""Datasets: ``threedb dataset export`` of a run directory, and one reader for rendered and real datasets.

``export_run(run_dir, out)`` writes the versioned dataset format of :mod:`.format` (``write_idx_dataset``
does the same from an IDX pair such as MNIST, read by ``read_idx``); ``ImageDataset`` (a
``torch.utils.data.Dataset``) reads it, or a plain image-folder tree with masks / COCO / VOC boxes.
See docs/datasets.md. The reader (and torch) is imported on first use, so the CLI stays quick.
"""
from __future__ import annotations

from typing import Any

from threedb.evaluators.datasets.errors import DatasetError
from threedb.evaluators.datasets.export import export_run
from threedb.evaluators.datasets.format import FORMAT_NAME, FORMAT_VERSION
from threedb.evaluators.datasets.idx import read_idx, write_idx_dataset

__all__ = ["DatasetError", "FORMAT_NAME", "FORMAT_VERSION", "ImageDataset", "Record", "export_run", "read_idx",
           "write_idx_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("ImageDataset", "Record"):
        from threedb.evaluators.datasets import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
