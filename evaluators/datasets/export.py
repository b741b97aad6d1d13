"""``threedb dataset export``: a run directory -> a versioned image-folder dataset (see format.py)."""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from threedb.evaluators.datasets.errors import DatasetError
from threedb.evaluators.datasets.format import (DATASET_JSON, FORMAT_NAME, FORMAT_VERSION, IMAGES, SAMPLES,
                                               SOURCE_CONFIG, pass_dir)
from threedb.sim import store

#: Keys of a details.log row that are not evaluator outputs.
_ROW_KEYS = frozenset(store.JOB_KEYS + store.EXTRA_KEYS)
_PASS_EXTS = (".png", ".exr")


def safe_name(name: str) -> bool:
    """Whether ``name`` can be one path component (no separators, no hidden or parent names)."""
    return (bool(name) and len(name.encode()) <= 255 and not name.startswith(".")
            and not any(ch in name for ch in "/\\\0\n"))


def _read_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / store.DETAILS
    if not path.is_file():
        raise DatasetError(path, "missing: not a threedb run directory")
    rows = []
    try:
        for lineno, row in enumerate(store.read_rows(run_dir), 1):
            if not isinstance(row, dict) or "id" not in row:
                raise DatasetError(path, "not a row object with an 'id'", line=lineno)
            rows.append(row)
    except ValueError as exc:
        raise DatasetError(path, f"unreadable row ({exc})") from None
    return rows


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    import yaml

    path = run_dir / store.CONFIG
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(path, f"unreadable YAML ({exc})") from None
    return data if isinstance(data, dict) else None


def _uid(row: Mapping[str, Any]) -> str:
    uid = row.get("object_uid")
    return str(uid) if uid is not None else Path(str(row.get("model") or "")).stem


def _catalog_names(config: Mapping[str, Any] | None, uids: Iterable[str]) -> tuple[dict[str, str], str]:
    """Class names of ``uids`` from the run's asset catalog (``assets.root`` of its config), and where
    they came from; a uid the catalog cannot name is its own class name."""
    from threedb.sim.assets import load_catalog
    from threedb.sim.errors import ThreeDBError

    root = ((config or {}).get("assets") or {}).get("root", "default")
    names = {uid: uid for uid in uids}
    try:
        catalog = load_catalog(root)
    except (ThreeDBError, OSError):
        return names, "object uids (the run's asset catalog could not be loaded)"
    for uid in names:
        if uid in catalog.objects:
            names[uid] = catalog.objects[uid].class_name
    return names, f"asset catalog {root!r}"


def _folders(uids: Sequence[str], names: Mapping[str, str]) -> dict[str, str]:
    """Folder of each class: its class name when that is a unique, safe file name, else its uid."""
    by_name: dict[str, list[str]] = {}
    for uid in uids:
        by_name.setdefault(names[uid], []).append(uid)
    folders = {uid: (names[uid] if safe_name(names[uid]) and len(by_name[names[uid]]) == 1 else uid)
               for uid in uids}
    if len(set(folders.values())) != len(folders):  # a name equal to another class's uid: uids only
        folders = {uid: uid for uid in uids}
    return folders


def read_class_list(text: str, source: str) -> list[str]:
    """Object uids from ``--classes`` (comma separated) or a ``--classes-file`` (JSON list, or one uid
    a line with ``#`` comments)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise DatasetError(source, f"unreadable JSON list of uids ({exc})") from None
        if not all(isinstance(u, str) for u in data):
            raise DatasetError(source, "expected a JSON list of object uid strings")
        uids = [u.strip() for u in data]
    else:
        uids = [part.strip() for line in stripped.splitlines() for part in line.split("#")[0].split(",")]
    uids = [u for u in uids if u]
    if not uids:
        raise DatasetError(source, "no object uids given")
    repeated = sorted({u for u in uids if uids.count(u) > 1})
    if repeated:
        raise DatasetError(source, f"uids repeated: {repeated}")
    return uids


def _pass_files(images: Path, ids: set[str]) -> dict[str, dict[str, str]]:
    """``{id: {pass: file name}}`` of the extra passes lying beside the runs' RGB images."""
    found: dict[str, dict[str, str]] = {}
    if not images.is_dir():
        return found
    for entry in os.scandir(images):
        stem, ext = os.path.splitext(entry.name)
        if ext not in _PASS_EXTS or "_" not in stem:
            continue
        job_id, name = stem.rsplit("_", 1)
        if job_id in ids and name != "rgb":
            found.setdefault(job_id, {})[name] = entry.name
    return found


def export_run(run_dir: str | Path, out: str | Path, *, classes: Sequence[str] | None = None,
               include_failed: bool = False) -> dict[str, Any]:
    """Export the images of ``run_dir`` as a dataset in ``out`` (a new or empty folder); returns the
    contents of the written ``dataset.json``.

    ``classes``: object uids, in label order (default: every uid in the run, sorted by folder name, so
    that torchvision's ``ImageFolder`` finds the same labels). Rows of other objects are skipped, as
    are failed rows (unless ``include_failed`` and the row kept an image) and rows without an image;
    each kind is counted.
    """
    run_dir, out = Path(run_dir), Path(out)
    rows = _read_rows(run_dir)
    config = _read_config(run_dir)
    run_uids = list(dict.fromkeys(_uid(r) for r in rows))
    for uid in run_uids:
        if not safe_name(uid):
            raise DatasetError(run_dir / store.DETAILS, f"object uid {uid!r} cannot name a folder")
    if classes is not None:
        unknown = [u for u in classes if u not in run_uids]
        if unknown:
            raise DatasetError(run_dir / store.DETAILS, f"classes {unknown} are not objects of this run "
                                                        f"(it has {sorted(run_uids)})")
        uids = list(classes)
        names, names_from = _catalog_names(config, uids)
        folders = _folders(uids, names)
        order = "as given by --classes"
    else:
        names, names_from = _catalog_names(config, run_uids)
        folders = _folders(run_uids, names)
        uids = sorted(run_uids, key=lambda u: folders[u])
        order = "sorted by folder name (torchvision ImageFolder's order)"
    if not uids:
        raise DatasetError(run_dir / store.DETAILS, "the run has no rows")
    label_of = {uid: i for i, uid in enumerate(uids)}

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(out, "exists and is not an empty folder; export into a new one")
    images = run_dir / store.IMAGES
    listing = {e.name for e in os.scandir(images)} if images.is_dir() else set()
    passes = _pass_files(images, {str(r["id"]) for r in rows})

    skipped = {"failed": 0, "no_image": 0, "other_class": 0, "duplicate": 0}
    samples: list[dict[str, Any]] = []
    copies: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for row in rows:
        job_id, uid = str(row["id"]), _uid(row)
        if not safe_name(job_id):
            raise DatasetError(run_dir / store.DETAILS, f"job id {job_id!r} cannot name a file")
        if job_id in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(job_id)
        if uid not in label_of:
            skipped["other_class"] += 1
            continue
        failed = row.get("status") == "failed"
        if failed and not include_failed:
            skipped["failed"] += 1
            continue
        if f"{job_id}_rgb.png" not in listing:
            skipped["no_image"] += 1
            continue
        folder = folders[uid]
        file = f"{IMAGES}/{folder}/{job_id}.png"
        copies.append((images / f"{job_id}_rgb.png", out / file))
        pass_paths = {}
        for name, src in sorted(passes.get(job_id, {}).items()):
            dest = f"{pass_dir(name)}/{folder}/{job_id}{os.path.splitext(src)[1]}"
            copies.append((images / src, out / dest))
            pass_paths[name] = dest
        samples.append({
            "id": job_id, "file": file, "label": label_of[uid], "class_name": names[uid], "object_uid": uid,
            "environment": row.get("environment"), "model": row.get("model"),
            "render_args": row.get("render_args") or {}, "seed": row.get("seed"),
            "status": row.get("status", "ok"), "passes": pass_paths,
            "outputs": {k: v for k, v in row.items() if k not in _ROW_KEYS},
        })
    if not samples:
        raise DatasetError(run_dir, f"no row can be exported (skipped: {skipped})")
    samples.sort(key=lambda s: (s["label"], s["file"]))

    for uid in uids:
        (out / IMAGES / folders[uid]).mkdir(parents=True, exist_ok=True)  # empty classes keep their label
    for src, dest in copies:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    with open(out / SAMPLES, "w") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, allow_nan=False) + "\n")
    if (run_dir / store.CONFIG).is_file():
        shutil.copyfile(run_dir / store.CONFIG, out / SOURCE_CONFIG)

    pass_formats = {}
    for sample in samples:
        for name, dest in sample["passes"].items():
            pass_formats.setdefault(name, {"dir": pass_dir(name), "format": os.path.splitext(dest)[1][1:]})
    per_class = {folders[uid]: 0 for uid in uids}
    for sample in samples:
        per_class[folders[sample["object_uid"]]] += 1
    manifest = {}
    if (run_dir / store.MANIFEST).is_file():
        try:
            manifest = json.loads((run_dir / store.MANIFEST).read_text())
        except ValueError:
            manifest = {}
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "classes": [{"index": i, "uid": uid, "name": names[uid], "folder": folders[uid]}
                    for i, uid in enumerate(uids)],
        "class_order": order,
        "class_names_from": names_from,
        "samples": SAMPLES,
        "passes": pass_formats,
        "environments": sorted({str(s["environment"]) for s in samples}),
        "counts": {"rows": len(rows), "samples": len(samples), "skipped": skipped, "per_class": per_class},
        "source": {"run_dir": str(run_dir.resolve()), "seed": manifest.get("seed"),
                   "started": manifest.get("started"),
                   "config": SOURCE_CONFIG if (out / SOURCE_CONFIG).is_file() else None},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "threedb_version": _version(),
    }
    # written last: a folder without dataset.json is an unfinished export, and readers refuse it
    tmp = out / f".{DATASET_JSON}.tmp"
    tmp.write_text(json.dumps(header, indent=2) + "\n")
    os.replace(tmp, out / DATASET_JSON)
    return header


def _version() -> str | None:
    try:
        return metadata.version("threedb")
    except metadata.PackageNotFoundError:
        return None
