"""IDX files (the MNIST format) and ``threedb dataset from-idx``: an IDX image/label pair -> a versioned
threedb dataset (``dataset.json``, ``samples.jsonl``, ``images/<class>/<id>.png``), which ``threedb
train`` and the robustness jobs read like any other (:class:`~threedb.evaluators.datasets.ImageDataset`).

IDX (LeCun et al.): a big-endian header ``0x00 0x00 <type> <ndim>``, ``ndim`` 32-bit sizes, then the
values in C order; the files are often gzip-compressed (``.gz``, detected by its magic bytes).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from threedb.evaluators.datasets.errors import DatasetError
from threedb.evaluators.datasets.format import DATASET_JSON, FORMAT_NAME, FORMAT_VERSION, IMAGES, SAMPLES

#: IDX type byte -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "missing IDX file") from None
    except OSError as exc:
        raise DatasetError(path, f"unreadable IDX file ({exc.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(path, f"corrupt gzip data ({exc})") from None
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed or not), in its native dtype and shape, e.g.
    ``uint8 (10000, 28, 28)`` for MNIST's ``t10k-images-idx3-ubyte.gz``; a DatasetError names the file
    and what is wrong with it."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(path, "not an IDX file (the first two bytes must be 0)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise DatasetError(path, f"unknown IDX data type 0x{code:02x} (known: "
                                 f"{', '.join(f'0x{c:02x}' for c in IDX_TYPES)})")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DatasetError(path, f"truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        raise DatasetError(path, f"IDX header says shape {shape} ({expected} bytes of {dtype.str}), the file "
                                 f"holds {body} bytes of data")
    values = np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def parse_range(text: str | None, total: int, *, what: str = "--range") -> tuple[int, int]:
    """``START:STOP`` (Python slice bounds, either may be empty) within ``range(total)``."""
    if text is None:
        return 0, total
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        stop = int(parts[1]) if parts[1].strip() else total
    except ValueError:
        raise DatasetError(what, f"expected START:STOP (e.g. 0:8000), got {text!r}") from None
    if not 0 <= start < stop <= total:
        raise DatasetError(what, f"{start}:{stop} is not a non-empty range within 0:{total}")
    return start, stop


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_idx_dataset(images: str | os.PathLike[str], labels: str | os.PathLike[str], out: str | os.PathLike[str],
                      *, start: int = 0, stop: int | None = None,
                      classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Write the examples ``start..stop-1`` of an IDX image file (``N x H x W`` uint8, grayscale) and its
    label file (``N`` integers) into ``out`` as a versioned threedb dataset; returns its header.

    Labels ``0..K-1`` are classes named ``classes`` (default ``"0"``, ``"1"``, ... up to the largest
    label); every class gets a folder, also an empty one. Images are 8-bit grayscale PNGs
    ``images/<class>/<index>.png`` (the reader gives them as three equal RGB channels); sample ids are
    the zero-padded IDX indices, so a subset keeps saying which example of the file it is.
    """
    from PIL import Image

    images_path, labels_path, out = Path(images), Path(labels), Path(out)
    pixels, targets = read_idx(images_path), read_idx(labels_path)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise DatasetError(images_path, f"expected N x H x W uint8 images, got {pixels.dtype} {pixels.shape}")
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise DatasetError(labels_path, f"expected N integer labels, got {targets.dtype} {targets.shape}")
    if len(targets) != len(pixels):
        raise DatasetError(labels_path, f"{len(targets)} labels for the {len(pixels)} images of {images_path}")
    stop = len(pixels) if stop is None else stop
    if not 0 <= start < stop <= len(pixels):
        raise DatasetError(images_path, f"range {start}:{stop} is not a non-empty range within its "
                                        f"{len(pixels)} images")
    if targets.min() < 0:
        raise DatasetError(labels_path, f"negative label {int(targets.min())}")
    # default classes from the whole file, so that every range of it has the same class list
    names = list(classes) if classes is not None else [str(i) for i in range(int(targets.max()) + 1)]
    if int(targets[start:stop].max()) >= len(names):
        raise DatasetError(labels_path, f"label {int(targets[start:stop].max())} is outside the {len(names)} "
                                        f"classes {names}")
    if len(set(names)) != len(names) or not all(n and "/" not in n and not n.startswith(".") for n in names):
        raise DatasetError("--classes", f"class names must be distinct, non-empty file names, got {names}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(out, "exists and is not an empty folder")
    digits = len(str(len(pixels) - 1))
    samples, per_class = [], {name: 0 for name in names}
    for name in names:
        (out / IMAGES / name).mkdir(parents=True, exist_ok=True)
    for index in range(start, stop):
        label = int(targets[index])
        sample_id = f"{index:0{digits}d}"
        file = f"{IMAGES}/{names[label]}/{sample_id}.png"
        Image.fromarray(pixels[index]).save(out / file)   # 2-D uint8: mode L
        samples.append({"id": sample_id, "file": file, "label": label, "class_name": names[label],
                        "idx_index": index})
        per_class[names[label]] += 1
    samples.sort(key=lambda s: (s["label"], s["file"]))
    with open(out / SAMPLES, "w") as handle:
        for sample in samples:
            handle.write(json.dumps(sample) + "\n")
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "classes": [{"index": i, "uid": name, "name": name, "folder": name} for i, name in enumerate(names)],
        "class_order": "label value",
        "class_names_from": "--classes" if classes is not None else "label values",
        "samples": SAMPLES,
        "passes": {},
        "environments": [],
        "counts": {"samples": len(samples), "per_class": per_class},
        "source": {"idx_images": images_path.name, "idx_labels": labels_path.name,
                   "images_sha256": _sha256(images_path), "labels_sha256": _sha256(labels_path),
                   "range": [start, stop], "image_size": [int(pixels.shape[1]), int(pixels.shape[2])]},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = out / f".{DATASET_JSON}.tmp"       # written last, as the exporter does
    tmp.write_text(json.dumps(header, indent=2) + "\n")
    os.replace(tmp, out / DATASET_JSON)
    return header
