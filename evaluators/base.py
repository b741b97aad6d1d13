"""The evaluator interface: declared outputs, batched evaluation, and loading evaluators from a config.

An ``evaluation:`` mapping names the evaluator in one of these ways, with its arguments under
``args:`` (other keys beside the name are taken as arguments too):

* ``type: classification`` — a built-in (``classification``, ``detection``, ``segmentation``) or
  the name of an installed entry point of the group ``threedb.evaluators``;
* ``module: pkg.mod`` or ``module: "pkg.mod:Class"`` — the original 3DB form, e.g.
  ``module: threedb.evaluators.classification``;
* ``file: my_eval.py`` (+ optional ``class: Name``) — a Python file beside the config.

A module or file without a class name must define exactly one public :class:`Evaluator` subclass
(or export one as ``Evaluator``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from threedb.sim.errors import ConfigError
from threedb.sim.plugins import available, import_class
from threedb.sim.user_files import read_json

if TYPE_CHECKING:
    from threedb.evaluators.models import LoadedModel

ENTRY_POINT_GROUP = "threedb.evaluators"
BUILTIN_EVALUATORS = {
    "classification": "threedb.evaluators.classification:ClassificationEvaluator",
    "detection": "threedb.evaluators.detection:DetectionEvaluator",
    "segmentation": "threedb.evaluators.segmentation:SegmentationEvaluator",
}
#: Names the original 3DB used for its evaluator modules.
LEGACY_MODULES = {
    "threedb.evaluators.classification": "classification",
    "threedb.evaluators.detection": "detection",
}


@dataclass(frozen=True)
class OutputSpec:
    """One declared evaluator output: a fixed shape (``()`` for a scalar) and a numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class Evaluator(ABC):
    """Turns a batch of model outputs plus per-job metadata into per-job metric rows.

    Subclasses set :attr:`output_type` (threedboard's ``"classes"`` or ``"bboxes"``) and
    :attr:`needs` (render passes they read from the job metadata, e.g. ``("mask",)``), declare
    their outputs in :meth:`declare_outputs`, and implement :meth:`evaluate`.

    ``jobs_meta[i]`` is a mapping with at least ``object_uid``; evaluators that need passes find
    them under their names (``mask``: bool HxW, ``instance``: uint8 HxW); ``input_size`` (h, w)
    is the model's input size when it differs from the render's.
    """

    output_type: ClassVar[str] = "classes"
    needs: ClassVar[tuple[str, ...]] = ()

    #: Where the arguments came from, for error messages (set by :func:`load_evaluator`).
    config_file: str | None = None
    args_key: str = "evaluation.args"

    @abstractmethod
    def declare_outputs(self) -> list[OutputSpec]:
        """Names, shapes and dtypes of every output, known before any job runs."""

    @abstractmethod
    def evaluate(self, batch_outputs: Any, jobs_meta: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One dict per job (JSON-ready Python values), keys exactly the declared output names."""

    def setup(self, model: "LoadedModel | None") -> None:
        """Called once with the loaded model before evaluating (checks against its classes, resolution)."""

    def check_objects(self, uids: Sequence[str]) -> None:
        """Called once with every object uid of the run; raise :class:`ConfigError` for unusable ones.

        The default: with a class map, every object needs an entry in it.
        """
        classmap = getattr(self, "classmap", None)
        if classmap is None:
            return
        missing = [str(u) for u in uids if str(u) not in classmap]
        if missing:
            raise ConfigError(f"object uid {missing[0]!r} is not in the class map {self.classmap_source}"
                              + (f" (nor {missing[1:5]})" if len(missing) > 1 else "")
                              + "; add it with its acceptable class indices",
                              file=self.config_file, key=f"{self.args_key}.classmap_path", value=missing[0],
                              expected=f"an entry for every object: {sorted(classmap)[:5]}...")

    def output_names(self) -> list[str]:
        return [o.name for o in self.declare_outputs()]

    def load_classmap(self, classmap_path: str | Path | None, classmap: Any, base_dir: str | Path | None) -> None:
        """Set ``classmap`` ({model_uid: [int]}) and ``classmap_source`` from a JSON file (relative to
        ``base_dir``) or an inline mapping; both None leaves ``classmap`` None."""
        self.classmap, self.classmap_source = None, None
        if classmap_path is not None:
            path = Path(classmap_path)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            self.classmap_source = str(path)
            self.classmap = load_class_map(path, key=f"{self.args_key}.classmap_path")
        elif classmap is not None:
            self.classmap_source = "evaluation.args.classmap"
            self.classmap = parse_class_map(classmap, source=self.classmap_source, key=f"{self.args_key}.classmap")

    def arg_error(self, name: str, message: str, value: Any = None, expected: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.config_file, key=f"{self.args_key}.{name}", value=value,
                           expected=expected)


def load_class_map(path: str | Path, *, file: Any = None, key: str = "evaluation.args.classmap_path"
                   ) -> dict[str, list[int]]:
    """``{model_uid: int | [int]}`` JSON -> uid -> list of acceptable class indices."""
    path = Path(path)
    data = read_json(path, what="class map", file=file, key=key,
                     expected="a JSON file {model_uid: class index or [indices]}")
    return parse_class_map(data, source=str(path), file=file, key=key)


def parse_class_map(data: Any, *, source: str, file: Any = None, key: str = "evaluation.args.classmap"
                    ) -> dict[str, list[int]]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"class map {source} must map object uids to class indices", file=file, key=key,
                          value=type(data).__name__, expected="{model_uid: int | [int]}")
    out: dict[str, list[int]] = {}
    for uid, value in data.items():
        labels = [value] if isinstance(value, int) else value
        if (not isinstance(labels, list) or not labels
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in labels)):
            raise ConfigError(f"class map {source}: entry {uid!r} must be a class index or a non-empty list of them",
                              file=file, key=key, value=value, expected="int >= 0 or [int, ...]")
        out[str(uid)] = list(labels)
    return out


def object_uid(meta: Mapping[str, Any]) -> str:
    """The object uid of a job: ``object_uid``, else the stem of ``model`` (3DB's ``X.blend``)."""
    uid = meta.get("object_uid")
    if uid is None and meta.get("model") is not None:
        uid = Path(str(meta["model"])).stem
    if uid is None:
        raise KeyError("job metadata has neither 'object_uid' nor 'model'")
    return str(uid)


def resolve_evaluator_class(spec: Mapping[str, Any], *, base_dir: Path | None = None, file: Any = None,
                            key: str = "evaluation") -> type[Evaluator]:
    names = [k for k in ("type", "module", "file") if spec.get(k) is not None]
    if len(names) != 1:
        raise ConfigError(f"name the evaluator with exactly one of type, module or file (found {names or 'none'})",
                          file=file, key=key, value=names,
                          expected=f"type: one of {sorted(available(BUILTIN_EVALUATORS, ENTRY_POINT_GROUP))}")
    how = names[0]
    value = str(spec[how])
    cls_name = spec.get("class")
    if how == "type":
        known = available(BUILTIN_EVALUATORS, ENTRY_POINT_GROUP)
        if value not in known:
            raise ConfigError(f"unknown evaluator type {value!r}", file=file, key=f"{key}.type", value=value,
                              expected=f"one of {sorted(known)}, or module:/file:")
        ref = known[value]
    elif how == "module":
        ref = BUILTIN_EVALUATORS[LEGACY_MODULES[value]] if value in LEGACY_MODULES and not cls_name else value
        if cls_name and ":" not in ref:
            ref = f"{ref}:{cls_name}"
    else:
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"evaluator file not found: {path}", file=file, key=f"{key}.file", value=value,
                              expected="an existing .py file")
        ref = f"{path}:{cls_name}" if cls_name else str(path)
    try:
        return import_class(ref, Evaluator)
    except ConfigError:
        raise
    except Exception as exc:  # ImportError, or the plugin's own import failing
        raise ConfigError(f"cannot load evaluator {ref}: {type(exc).__name__}: {exc}", file=file,
                          key=f"{key}.{how}", value=value, expected="an Evaluator subclass") from None


def load_evaluator(spec: Mapping[str, Any], *, base_dir: str | Path | None = None, file: Any = None,
                   key: str = "evaluation") -> Evaluator:
    """The evaluator an ``evaluation`` mapping describes, constructed with its arguments.

    Built-in evaluators resolve relative paths among their arguments (``classmap_path``) against
    ``base_dir`` (the config's folder); a custom evaluator receives ``base_dir`` only if its
    constructor takes it.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError("evaluation must be a mapping", file=file, key=key, value=spec)
    base = Path(base_dir) if base_dir is not None else (Path(file).parent if file else None)
    cls = resolve_evaluator_class(spec, base_dir=base, file=file, key=key)
    args = spec.get("args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError("args must be a mapping", file=file, key=f"{key}.args", value=args)
    args = {**{k: v for k, v in spec.items() if k not in ("type", "module", "file", "class", "args")}, **args}
    import inspect
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    if "base_dir" in params:
        args.setdefault("base_dir", base)
    try:
        evaluator = cls(**args)
    except ConfigError as exc:
        if exc.file is None and file is not None:
            raise ConfigError(exc.detail, file=file, key=exc.key, value=exc.value, expected=exc.expected) from None
        raise
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__} does not accept these arguments: {exc}", file=file, key=f"{key}.args",
                          value={k: v for k, v in args.items() if k != "base_dir"}) from None
    evaluator.config_file = str(file) if file is not None else None
    evaluator.args_key = f"{key}.args"
    return evaluator
