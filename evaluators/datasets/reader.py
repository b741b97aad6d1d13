"""``ImageDataset``: one torch Dataset over an exported threedb dataset or a real image-folder tree.

Sources (picked by what ``root`` holds):

* an exported dataset (``root/dataset.json``, see format.py): labels, control parameters, environment and
  every logged pass (``mask``, ``depth``, ...) of each sample;
* an image-folder tree ``root/<class>/**/<image>`` (torchvision ``ImageFolder``'s layout and label order),
  optionally with masks ``masks/<class>/**/<stem>.png`` and boxes from a COCO json or a Pascal VOC folder.

Everything cheap is checked when the dataset is opened: files exist (inside ``root``), labels are in
the class list, annotation files parse, and image/mask/depth sizes agree (read from file headers only).
Each problem is one :class:`DatasetError` naming the file.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from threedb.evaluators.datasets.annotations import Boxes, check_box, load_coco, load_voc
from threedb.evaluators.datasets.errors import DatasetError
from threedb.evaluators.datasets.format import SAMPLES, read_header

#: Image file extensions an image-folder tree may hold (torchvision's ``IMG_EXTENSIONS``).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Record:
    """One sample on disk: what ``ImageDataset[i]`` loads.

    ``passes`` maps a pass name (``mask``, ``depth``, ...) to its file; ``params`` are the job's control
    parameters (``render_args``) of an exported dataset; ``boxes`` come from COCO/VOC annotations.
    """

    id: str
    file: Path
    label: int
    size: tuple[int, int] | None = None            # (width, height) of the image
    environment: str | None = None
    object_uid: str | None = None
    params: Mapping[str, Any] | None = None
    passes: Mapping[str, Path] = field(default_factory=dict)
    boxes: Boxes | None = None


def _image_size(path: Path, what: str = "image") -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:  # reads the header only
            return img.size
    except FileNotFoundError:
        raise DatasetError(path, f"missing {what} file") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(path, f"unreadable {what} ({exc})") from None


def _exr_size(path: Path) -> tuple[int, int]:
    import OpenEXR

    if not path.is_file():
        raise DatasetError(path, "missing EXR file")
    try:
        with OpenEXR.File(str(path), header_only=True) as f:
            (x0, y0), (x1, y1) = f.header()["dataWindow"]
    except Exception as exc:  # OpenEXR raises plain RuntimeError/ValueError on broken files
        raise DatasetError(path, f"unreadable EXR ({exc})") from None
    return int(x1 - x0 + 1), int(y1 - y0 + 1)


def _pass_size(path: Path) -> tuple[int, int]:
    return _exr_size(path) if path.suffix.lower() == ".exr" else _image_size(path, "pass")


def _inside(root: Path, relative: Any, where: Path, line: int) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` escapes (no path traversal)."""
    if not isinstance(relative, str) or not relative:
        raise DatasetError(where, f"expected a relative file path, got {relative!r}", line=line)
    path = (root / relative).resolve()
    if os.path.isabs(relative) or not path.is_relative_to(root):
        raise DatasetError(where, f"file {relative!r} lies outside the dataset folder {root}", line=line)
    return path


def _read_exr_array(path: Path) -> np.ndarray:
    from threedb.sim.render.files import read_exr

    channels = read_exr(path)
    if len(channels) == 1:
        return next(iter(channels.values())).astype(np.float32)
    for order in (("R", "G", "B", "A"), ("R", "G", "B"), ("U", "V")):
        if set(channels) == set(order):
            return np.stack([channels[c] for c in order], axis=-1).astype(np.float32)
    return np.stack([channels[c] for c in sorted(channels)], axis=-1).astype(np.float32)


def _env_matches(environment: str | None, wanted: set[str]) -> bool:
    return environment is not None and (environment in wanted or Path(environment).stem in wanted)


class ImageDataset(Dataset):
    """A ``torch.utils.data.Dataset`` of labelled images, from an exported threedb dataset or a plain
    image-folder tree (see the module docstring and docs/datasets.md).

    ``ds[i]`` is ``(image, label, target)``, or ``(image, label)`` with ``extras=False``:

    * ``image``: ``transform(PIL RGB image)``, or without a transform a ``uint8`` tensor ``3xHxW`` (the
      exact pixels);
    * ``label``: the class index (``int``), after ``target_transform`` if given;
    * ``target``: a dict with ``id`` and ``path``, plus what the sample has: ``mask`` (``bool`` tensor
      HxW), ``depth`` (``float32`` tensor HxW, ``inf`` on the background) and any other pass
      (PNG -> ``uint8``, EXR -> ``float32``), ``boxes`` (``float32`` Nx4, pixels ``x1, y1, x2, y2``) with
      ``box_labels`` (``int64`` N), ``params`` (the job's ``render_args``), ``environment``, ``object_uid``.

    ``transform`` sees the image only: geometric transforms are not applied to masks, depth or boxes.
    ``passes`` picks the passes loaded (default: all the dataset has). Batches of items with targets need
    ``collate_fn=ImageDataset.collate``. The order of samples is deterministic and torchvision
    ``ImageFolder``'s: by label, then folder path, then file name.
    """

    def __init__(self, root: str | Path, *, transform: Callable[[Any], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None, extras: bool = True,
                 passes: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                 masks: str | Path | None = None, coco: str | Path | None = None,
                 voc: str | Path | None = None) -> None:
        self.root = Path(root).resolve()
        self.transform = transform
        self.target_transform = target_transform
        self.extras = extras
        if not self.root.is_dir():
            raise DatasetError(self.root, "not a folder")
        if (self.root / "dataset.json").exists():
            if classes is not None or masks is not None or coco is not None or voc is not None:
                raise DatasetError(self.root / "dataset.json", "an exported dataset carries its own classes, "
                                   "masks and labels; classes/masks/coco/voc are for image-folder trees")
            self.header: dict[str, Any] | None = read_header(self.root)
            self.classes = [c["name"] for c in self.header["classes"]]
            self.class_uids: list[str] | None = [c["uid"] for c in self.header["classes"]]
            self.records = self._open_exported()
        else:
            self.header = None
            self.class_uids = None
            self.records = self._open_folder(classes, masks, coco, voc)
        available = sorted({name for r in self.records for name in r.passes})
        if passes is not None:
            unknown = sorted(set(passes) - set(available))
            if unknown:
                raise DatasetError(self.root, f"passes {unknown} are not in this dataset (it has {available})")
        self.passes = tuple(available if passes is None else passes)
        self.records.sort(key=self._order)

    def _order(self, record: Record) -> tuple[int, str, str]:
        # ImageFolder's order: label, then folder (as sorted(os.walk(...)) yields them), then file name
        rel = record.file.relative_to(self.root)
        return record.label, rel.parent.as_posix(), rel.name

    # -- opening -------------------------------------------------------------------------------
    def _open_exported(self) -> list[Record]:
        assert self.header is not None
        path = self.root / str(self.header.get("samples", SAMPLES))
        uids = self.class_uids or []
        records: list[Record] = []
        seen: set[str] = set()
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise DatasetError(path, "missing samples file") from None
        for lineno, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                sample = json.loads(text)
            except ValueError as exc:
                raise DatasetError(path, f"unreadable JSON ({exc})", line=lineno) from None
            if not isinstance(sample, dict) or not {"id", "file", "label"} <= set(sample):
                raise DatasetError(path, "a sample needs id, file and label", line=lineno)
            label = sample["label"]
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(uids):
                raise DatasetError(path, f"label {label!r} is outside the class list (0..{len(uids) - 1})",
                                   line=lineno)
            if sample.get("object_uid") not in (None, uids[label]):
                raise DatasetError(path, f"object {sample['object_uid']!r} has label {label}, which is "
                                         f"class {uids[label]!r} in dataset.json", line=lineno)
            job_id = str(sample["id"])
            if job_id in seen:
                raise DatasetError(path, f"sample id {job_id!r} repeated", line=lineno)
            seen.add(job_id)
            file = _inside(self.root, sample["file"], path, lineno)
            size = _image_size(file)
            passes = {}
            for name, rel in (sample.get("passes") or {}).items():
                pass_path = _inside(self.root, rel, path, lineno)
                if _pass_size(pass_path) != size:
                    raise DatasetError(pass_path, f"{name} is {_pass_size(pass_path)} (w, h), its image "
                                                  f"{file.name} is {size}")
                passes[name] = pass_path
            records.append(Record(id=job_id, file=file, label=label, size=size,
                                  environment=sample.get("environment"), object_uid=sample.get("object_uid"),
                                  params=sample.get("render_args") or {}, passes=passes))
        return records

    def _open_folder(self, classes: Sequence[str] | None, masks: str | Path | None,
                     coco: str | Path | None, voc: str | Path | None) -> list[Record]:
        mask_dir = Path(masks).resolve() if masks is not None else None
        voc_dir = Path(voc).resolve() if voc is not None else None
        if mask_dir is not None and not mask_dir.is_dir():
            raise DatasetError(mask_dir, "masks folder missing")
        if voc_dir is not None and not voc_dir.is_dir():
            raise DatasetError(voc_dir, "Pascal VOC annotation folder missing")
        annotation_dirs = {d for d in (mask_dir, voc_dir) if d is not None}
        folders = sorted(e.name for e in os.scandir(self.root)
                         if e.is_dir() and not e.name.startswith(".")
                         and (self.root / e.name).resolve() not in annotation_dirs)
        if classes is None:
            self.classes = folders
        else:
            self.classes = list(classes)
            outside = [f for f in folders if f not in self.classes]
            if outside:
                raise DatasetError(self.root / outside[0], f"class folder {outside[0]!r} is outside the "
                                                           f"class list {self.classes}")
        if not self.classes:
            raise DatasetError(self.root, "no class folders (expected root/<class>/<image>)")
        class_to_idx = {name: i for i, name in enumerate(self.classes)}
        records: list[Record] = []
        for name in folders:
            for dirpath, dirnames, filenames in os.walk(self.root / name, followlinks=True):
                dirnames.sort()
                for filename in sorted(filenames):
                    if not filename.lower().endswith(IMG_EXTENSIONS):
                        continue
                    file = Path(dirpath) / filename
                    rel = file.relative_to(self.root)
                    size = _image_size(file)
                    passes = {}
                    if mask_dir is not None:
                        mask = mask_dir / rel.with_suffix(".png")
                        if _image_size(mask, "mask") != size:
                            raise DatasetError(mask, f"mask is {_image_size(mask, 'mask')} (w, h), its image "
                                                     f"{rel.as_posix()} is {size}")
                        passes["mask"] = mask
                    records.append(Record(id=rel.with_suffix("").as_posix(), file=file,
                                          label=class_to_idx[name], size=size, passes=passes))
        if not records:
            raise DatasetError(self.root, f"no images ({', '.join(IMG_EXTENSIONS)}) under the class folders")
        if coco is not None:
            records = self._attach_coco(records, Path(coco), class_to_idx)
        if voc_dir is not None:
            records = self._attach_voc(records, voc_dir, class_to_idx)
        return records

    def _attach_coco(self, records: list[Record], coco: Path, class_to_idx: Mapping[str, int]) -> list[Record]:
        by_name = load_coco(coco, class_to_idx)
        by_rel = {r.file.relative_to(self.root).as_posix(): i for i, r in enumerate(records)}
        by_base: dict[str, list[int]] = {}
        for rel, i in by_rel.items():
            by_base.setdefault(rel.rsplit("/", 1)[-1], []).append(i)
        found: dict[int, Boxes] = {}
        for name, boxes in by_name.items():
            index = by_rel.get(name)
            if index is None and len(by_base.get(name.rsplit("/", 1)[-1], ())) == 1:
                index = by_base[name.rsplit("/", 1)[-1]][0]
            if index is None:
                continue  # a COCO file may cover more images than this tree
            if index in found:
                raise DatasetError(coco, f"two COCO images match {records[index].file}")
            for j, box in enumerate(boxes.boxes):
                check_box(box, records[index].size or (0, 0), f"{name} box {j}", coco)
            found[index] = boxes
        if not found:
            raise DatasetError(coco, f"none of its {len(by_name)} images is a file under {self.root}")
        return [_with_boxes(r, found.get(i, Boxes())) for i, r in enumerate(records)]

    def _attach_voc(self, records: list[Record], voc_dir: Path, class_to_idx: Mapping[str, int]) -> list[Record]:
        out = []
        for record in records:
            rel = record.file.relative_to(self.root).with_suffix(".xml")
            xml = voc_dir / rel
            if not xml.is_file() and (voc_dir / rel.name).is_file():
                xml = voc_dir / rel.name  # VOC's flat Annotations/ folder
            boxes, declared = load_voc(xml, class_to_idx)
            if declared is not None and declared != record.size:
                raise DatasetError(xml, f"<size> says {declared} (w, h), the image {record.file.name} is "
                                        f"{record.size}")
            for j, box in enumerate(boxes.boxes):
                check_box(box, record.size or (0, 0), f"object[{j}]", xml)
            out.append(_with_boxes(record, boxes))
        return out

    # -- views ---------------------------------------------------------------------------------
    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order (as torchvision's ``ImageFolder.targets``)."""
        return [r.label for r in self.records]

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(image path, label)`` of every sample, in order (as ``ImageFolder.samples``)."""
        return [(str(r.file), r.label) for r in self.records]

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def environments(self) -> list[str]:
        """The environments the samples were rendered in (empty for an image-folder tree)."""
        return sorted({r.environment for r in self.records if r.environment is not None})

    def subset(self, *, environments: Iterable[str] | None = None,
               exclude_environments: Iterable[str] | None = None, labels: Iterable[int] | None = None,
               ids: Iterable[str] | None = None, where: Callable[[Record], bool] | None = None) -> "ImageDataset":
        """A new dataset of the samples that pass every given filter, in the same order.

        Environments match by file name (``city.exr``) or stem (``city``); naming one the dataset does
        not have is an error (a typo would silently empty the split). Labels keep their meaning: the
        class list is unchanged.
        """
        keep = list(self.records)
        for name, wanted in (("environments", environments), ("exclude_environments", exclude_environments)):
            if wanted is None:
                continue
            wanted = set(wanted)
            if not self.environments:
                raise DatasetError(self.root, "samples have no environment (not an exported threedb dataset)")
            known = set(self.environments) | {Path(e).stem for e in self.environments}
            unknown = sorted(wanted - known)
            if unknown:
                raise DatasetError(self.root, f"{name}: {unknown} not in this dataset (it has {self.environments})")
            inside = name == "environments"
            keep = [r for r in keep if _env_matches(r.environment, wanted) == inside]
        if labels is not None:
            label_set = set(labels)
            keep = [r for r in keep if r.label in label_set]
        if ids is not None:
            id_set = {str(i) for i in ids}
            keep = [r for r in keep if r.id in id_set]
        if where is not None:
            keep = [r for r in keep if where(r)]
        view = copy.copy(self)
        view.records = keep
        return view

    def split_by_environment(self, held_out: Iterable[str]) -> tuple["ImageDataset", "ImageDataset"]:
        """``(train, test)``: samples of the other environments, and of the ``held_out`` ones."""
        held_out = list(held_out)
        return self.subset(exclude_environments=held_out), self.subset(environments=held_out)

    # -- items ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        import torch
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        record = self.records[index]
        try:
            with Image.open(record.file) as img:
                image = img.convert("RGB")
        except OSError as exc:
            raise DatasetError(record.file, f"unreadable image ({exc})") from None
        label: Any = record.label if self.target_transform is None else self.target_transform(record.label)
        image_out = self.transform(image) if self.transform is not None else pil_to_tensor(image)
        if not self.extras:
            return image_out, label
        target: dict[str, Any] = {"id": record.id, "path": str(record.file)}
        for name in self.passes:
            if name in record.passes:
                target[name] = torch.from_numpy(self._load_pass(name, record.passes[name], image.size))
        if record.boxes is not None:
            target["boxes"] = torch.tensor(record.boxes.boxes, dtype=torch.float32).reshape(-1, 4)
            target["box_labels"] = torch.tensor(record.boxes.labels, dtype=torch.int64)
        if record.params is not None:
            target["params"] = dict(record.params)
        if record.environment is not None:
            target["environment"] = record.environment
        if record.object_uid is not None:
            target["object_uid"] = record.object_uid
        return image_out, label, target

    @staticmethod
    def _load_pass(name: str, path: Path, size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        if path.suffix.lower() == ".exr":
            data = _read_exr_array(path)
        else:
            try:
                with Image.open(path) as img:
                    data = np.array(img)
            except OSError as exc:
                raise DatasetError(path, f"unreadable {name} ({exc})") from None
        if (data.shape[1], data.shape[0]) != size:  # the file changed since the dataset was opened
            raise DatasetError(path, f"{name} is {data.shape[1]}x{data.shape[0]}, its image {size[0]}x{size[1]}")
        if name == "mask":
            return data.any(axis=-1) if data.ndim == 3 else data != 0
        return data

    @staticmethod
    def collate(batch: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        """``collate_fn`` for a DataLoader: stacked images and labels, and the list of targets (their
        boxes and passes may differ in size between samples)."""
        from torch.utils.data import default_collate

        images = default_collate([item[0] for item in batch])
        labels = default_collate([item[1] for item in batch])
        if len(batch[0]) == 2:
            return images, labels
        return images, labels, [item[2] for item in batch]

    def __repr__(self) -> str:
        kind = "exported" if self.header is not None else "image-folder"
        return f"ImageDataset({str(self.root)!r}, {kind}, {len(self)} samples, {len(self.classes)} classes)"


def _with_boxes(record: Record, boxes: Boxes) -> Record:
    return replace(record, boxes=boxes)

