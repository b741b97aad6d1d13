"""Asset discovery: the default pack, and user asset roots in our layout or the original 3DB's.

Layouts of a user root (detected automatically):

* ours: ``ROOT/objects/<uid>.<ext>`` or ``ROOT/objects/<uid>/<uid>.<ext>`` (ext: obj, glb, gltf, ply,
  stl, blend) and ``ROOT/environments/<name>.<hdr|exr|blend>``; an optional ``ROOT/index.yaml`` gives
  ``objects: {uid: {class_name, up_axis, axis_scale, licence}}`` (defaults: class name = uid, up axis
  Z for obj/ply/stl — pass Y for files exported Y-up — and Y for glTF, which is always Y-up).
* the original 3DB's: ``ROOT/blender_models/<uid>.blend`` and ``ROOT/blender_environments/*``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from threedb.assets import ASSETS_DIR
from threedb.controls.params import closest_name
from threedb.sim.errors import AssetError

MESH_FORMATS = ("obj", "glb", "gltf", "ply", "stl", "blend")
ENVIRONMENT_FORMATS = ("hdr", "exr", "blend")
DEFAULT_PACK = ASSETS_DIR / "default_pack.yaml"


@dataclass(frozen=True)
class ObjectAsset:
    """A mesh file and what it shows."""

    uid: str
    path: Path
    class_name: str
    format: str                      #: obj, glb, gltf, ply, stl or blend
    up_axis: str = "Z"               #: the file's up axis: Z (kept) or Y (rotated to Z-up on import)
    axis_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  #: per-axis scale before normalisation
    licence: str = ""
    source: str = ""


@dataclass(frozen=True)
class EnvironmentAsset:
    """An environment: an HDRI image (``kind='hdri'``) or a .blend scene (``kind='blend'``)."""

    name: str
    path: Path
    kind: str
    licence: str = ""


@dataclass(frozen=True)
class AssetCatalog:
    """The objects and environments of one asset root."""

    root: str
    objects: dict[str, ObjectAsset] = field(default_factory=dict)
    environments: dict[str, EnvironmentAsset] = field(default_factory=dict)

    def select_objects(self, names: Sequence[str] | str = "all") -> list[ObjectAsset]:
        """The objects named (``'all'``: every one, sorted by uid)."""
        return _select(self.objects, names, "object", self.root)

    def select_environments(self, names: Sequence[str] | str = "all") -> list[EnvironmentAsset]:
        """The environments named (``'all'``: every one, sorted by name)."""
        return _select(self.environments, names, "environment", self.root)


def _select(items: dict[str, Any], names: Sequence[str] | str, what: str, root: str) -> list[Any]:
    root = str(DEFAULT_PACK) if root == "default" else root  # errors name a file or folder
    if names == "all":
        if not items:
            raise AssetError(root, f"the asset root has no {what}s")
        return [items[k] for k in sorted(items)]
    if isinstance(names, str):
        names = [names]  # one name, not its characters
    chosen = []
    for name in dict.fromkeys(names):  # in the order given, duplicates once
        if name not in items:
            raise AssetError(root, f"unknown {what} {name!r}{closest_name(name, list(items))};"
                                   f" available: {', '.join(sorted(items)) or 'none'}")
        chosen.append(items[name])
    return chosen


#: A .blend starts with "BLENDER", or with the zstd (Blender >= 3.0) or gzip magic when compressed.
_BLEND_MAGICS = (b"BLENDER", b"\x28\xb5\x2f\xfd", b"\x1f\x8b")


def check_blend_header(path: str | Path) -> None:
    """Raise :class:`AssetError` unless ``path`` starts like a (possibly compressed) .blend file."""
    with open(path, "rb") as f:
        head = f.read(7)
    if not head.startswith(_BLEND_MAGICS):
        raise AssetError(path, "not a Blender file (no BLENDER, zstd or gzip header)")


def blender_hdri_dir() -> Path:
    """Folder of the HDRIs that ship inside the bpy wheel, found without importing bpy."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("bpy", "the bpy package is not installed; it provides the default HDRIs")
    package = Path(list(spec.submodule_search_locations)[0])
    found = sorted(package.glob("[0-9]*.[0-9]*/datafiles/studiolights/world"))
    if not found:
        raise AssetError(package, "bpy ships no studiolights/world HDRIs in this installation")
    return found[-1]


def _load_default_pack() -> AssetCatalog:
    import pybullet_data  # the mesh source of the default pack

    index = yaml.safe_load(DEFAULT_PACK.read_text())
    mesh_dir = Path(pybullet_data.getDataPath())
    hdri_dir = blender_hdri_dir()
    objects = {}
    for uid, entry in index["objects"].items():
        path = mesh_dir / entry["file"]
        objects[uid] = ObjectAsset(uid=uid, path=path, class_name=entry["class_name"],
                                   format=path.suffix[1:].lower(), up_axis=entry.get("up_axis", "Z"),
                                   axis_scale=tuple(entry.get("axis_scale", (1.0, 1.0, 1.0))),
                                   licence="zlib (pybullet_data)", source=f"pybullet_data:{entry['file']}")
    environments = {name: EnvironmentAsset(name, hdri_dir / entry["file"], "hdri", "CC0 (Poly Haven, via Blender)")
                    for name, entry in index["environments"].items()}
    return AssetCatalog("default", objects, environments)


def _files(folder: Path, formats: Sequence[str]) -> dict[str, Path]:
    """``name -> file`` for files (or ``name/name.ext`` subfolders) with one of ``formats``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            inner = [path / f"{path.name}.{ext}" for ext in formats if (path / f"{path.name}.{ext}").is_file()]
            if inner:
                found[path.name] = inner[0]
        elif path.suffix[1:].lower() in formats:
            if path.stem in found:
                raise AssetError(path, f"two files define {path.stem!r}: {found[path.stem].name} and {path.name}")
            found[path.stem] = path
    return found


_INDEX_KEYS = {"class_name", "up_axis", "axis_scale", "licence", "source"}


def _index_objects(index_path: Path, index: Any, found: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The ``objects:`` entries of ``index.yaml``, checked: known uids and keys, up axis Z or Y."""
    if not isinstance(index, dict) or not isinstance(index.get("objects", {}) or {}, dict):
        raise AssetError(index_path, "expected a mapping 'objects: {uid: {class_name, up_axis, ...}}'")
    meta: dict[str, dict[str, Any]] = {}
    for uid, entry in (index.get("objects") or {}).items():
        uid, entry = str(uid), entry or {}
        if uid not in found:
            raise AssetError(index_path, f"objects.{uid}: no such object file{closest_name(uid, list(found))};"
                                         f" found: {', '.join(sorted(found)) or 'none'}")
        if not isinstance(entry, dict) or set(entry) - _INDEX_KEYS:
            bad = sorted(set(entry) - _INDEX_KEYS) if isinstance(entry, dict) else entry
            raise AssetError(index_path, f"objects.{uid}: unexpected {bad!r}; keys: {', '.join(sorted(_INDEX_KEYS))}")
        if "up_axis" in entry:
            axis = str(entry["up_axis"]).upper()
            if axis not in ("Z", "Y"):
                raise AssetError(index_path, f"objects.{uid}.up_axis: {entry['up_axis']!r} is not Z or Y")
            if axis == "Z" and found[uid].suffix.lower() in (".glb", ".gltf"):
                raise AssetError(index_path, f"objects.{uid}.up_axis: glTF files are always Y-up")
            entry = {**entry, "up_axis": axis}
        meta[uid] = entry
    return meta


def _load_user_root(root: Path) -> AssetCatalog:
    if not root.is_dir():
        raise AssetError(root, "asset root folder does not exist" if not root.exists() else "is not a folder")
    if (root / "objects").is_dir():
        mesh_dir, env_dir = root / "objects", root / "environments"
    elif (root / "blender_models").is_dir():
        mesh_dir, env_dir = root / "blender_models", root / "blender_environments"
    else:
        raise AssetError(root, "not an asset root: expected objects/ and environments/ folders"
                               " (or the original 3DB's blender_models/ and blender_environments/)")
    index_path = root / "index.yaml"
    try:
        index = yaml.safe_load(index_path.read_text()) or {} if index_path.is_file() else {}
    except yaml.YAMLError as exc:
        raise AssetError(index_path, f"not valid YAML: {exc}") from None
    found = _files(mesh_dir, MESH_FORMATS)
    meta = _index_objects(index_path, index, found)
    objects = {}
    for uid, path in found.items():
        fmt = path.suffix[1:].lower()
        entry = meta.get(uid, {})
        objects[uid] = ObjectAsset(uid=uid, path=path, class_name=str(entry.get("class_name", uid)), format=fmt,
                                   up_axis=str(entry.get("up_axis", "Y" if fmt in ("glb", "gltf") else "Z")),
                                   axis_scale=tuple(entry.get("axis_scale", (1.0, 1.0, 1.0))),
                                   licence=str(entry.get("licence", "")), source=str(path))
    environments = {}
    if env_dir.is_dir():
        for name, path in _files(env_dir, ENVIRONMENT_FORMATS).items():
            kind = "blend" if path.suffix.lower() == ".blend" else "hdri"
            environments[name] = EnvironmentAsset(name, path, kind)
    return AssetCatalog(str(root), objects, environments)


def load_catalog(root: str | Path | None = "default") -> AssetCatalog:
    """The catalog of asset root ``root`` (``'default'`` or ``None``: the bundled pack)."""
    if root is None or str(root) == "default":
        return _load_default_pack()
    return _load_user_root(Path(root).expanduser())
