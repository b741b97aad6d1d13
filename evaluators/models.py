"""Loading the model of an ``inference:`` config mapping, offline, plus its preprocessing.

Exactly one of these says what the model is (paths resolve against ``base_dir``, the config's folder):

* ``torchvision: resnet18`` — a ``torchvision.models`` builder, built with ``weights=None`` (and
  ``weights_backbone=None``): nothing is ever downloaded; trained weights come from ``weights:``.
  ``num_classes: N`` and ``args: {...}`` go to the builder.
* ``module: pkg.mod`` + ``class: Net`` (or ``module: "pkg.mod:Net"``), or ``file: net.py`` +
  ``class: Net`` — any callable returning an ``nn.Module``, called with ``args``. The original
  3DB form ``module: torchvision.models, class: resnet18, args: {pretrained: true}`` is refused
  with an explanation (downloads are impossible); give ``weights:`` a local file instead.
* ``torchscript: model.pt`` — a ``torch.jit.save`` archive.
* ``onnx: model.onnx`` — run with onnxruntime (CUDA provider when available).

``weights:`` is a local state dict read with ``torch.load(..., weights_only=True)`` (never
arbitrary unpickling); a checkpoint dict holding it under ``state_dict``/``model``/
``model_state_dict`` and DataParallel's ``module.`` prefixes are accepted.

Other keys: ``normalization: {mean, std}``, ``resolution: [h, w]`` (see
:mod:`threedb.evaluators.preprocess`), ``label_map`` (JSON list of class names, or
``{index: name}``), ``output_shape`` (expected per-image output shape, checked), ``device``
(``auto``|``cpu``|``cuda``|``cuda:N``), ``precision`` (``auto``|``fp32``|``fp16``|``bf16``),
``channels_last`` (bool, default true on CUDA), ``strict`` (state-dict key matching, default
true), ``batch_size`` (for the evaluator workers).

On CUDA, ``precision: auto`` runs eager torch modules under fp16 autocast (bf16 where the GPU
lacks fast fp16 is not a concern on current GPUs; pick ``bf16`` for models that overflow fp16)
with channels_last; TorchScript and ONNX models run in fp32. Top-1 predictions match the CPU
path up to near-ties; ``precision: fp32`` gives CPU-equal results to float tolerance.
"""
from __future__ import annotations

import contextlib
import inspect
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from threedb.evaluators.preprocess import Preprocess, parse_preprocess, to_device
from threedb.sim.errors import ConfigError, ThreeDBError
from threedb.sim.plugins import load_file_module
from threedb.sim.user_files import check_regular_file, path_from_text, read_json

SOURCE_KEYS = ("torchvision", "module", "file", "torchscript", "onnx")
#: Every key an ``inference`` mapping may hold (the run pipeline may read the ones it owns).
INFERENCE_KEYS = frozenset(SOURCE_KEYS + (
    "class", "args", "weights", "num_classes", "normalization", "resolution", "label_map",
    "output_shape", "device", "precision", "channels_last", "strict", "batch_size"))
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_DOWNLOAD_ARGS = ("pretrained", "pretrained_backbone")


class ModelError(ThreeDBError):
    """A model file cannot be used; the message names the file (and the config key)."""


# --------------------------------------------------------------------------- the loaded model

class OnnxModel:
    """An onnxruntime session with the call interface of an ``nn.Module``: tensor in, tensor(s) out."""

    def __init__(self, path: Path, device: torch.device) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def input_resolution(self) -> tuple[int, int] | None:
        """(h, w) when the graph's input has a fixed spatial size."""
        shape = self.session.get_inputs()[0].shape
        if len(shape) == 4 and all(isinstance(v, int) for v in shape[2:]):
            return (int(shape[2]), int(shape[3]))
        return None

    def eval(self) -> "OnnxModel":
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = [torch.from_numpy(o) for o in self.session.run(self.output_names, {self.input_name: array})]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


@dataclass
class LoadedModel:
    """A model in eval mode with its preprocessing; :meth:`predict` runs a batch of renders."""

    model: Callable[[torch.Tensor], Any]
    preprocess: Preprocess
    device: torch.device
    kind: str                                   #: torchvision | module | torchscript | onnx
    source: str                                 #: what was loaded (name or file)
    class_names: list[str] | None = None
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    batch_size: int | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    def forward(self, batch: torch.Tensor) -> Any:
        """Run a preprocessed CPU batch; outputs come back on the CPU, floats as float32."""
        x = to_device(batch, self.device, self.channels_last) if self.kind != "onnx" else batch
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            out = self.model(x)
        return _to_cpu(out)

    def predict(self, images: Any) -> Any:
        """Renders (NxHxWx3 uint8, or a list of HxWx3) -> model outputs (see :meth:`forward`)."""
        return self.forward(self.preprocess(images))


def _to_cpu(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu()
        return out.float() if out.is_floating_point() else out
    if isinstance(out, Mapping):
        return {k: _to_cpu(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_to_cpu(v) for v in out) if not hasattr(out, "_fields") else type(out)(*map(_to_cpu, out))
    return out


# --------------------------------------------------------------------------- helpers

def resolve_device(name: Any = "auto", *, file: Any = None, key: str = "inference.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is an error."""
    name = "auto" if name is None else name
    if not isinstance(name, str):
        raise ConfigError("device must be a string", file=file, key=key, value=name,
                          expected="auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}", file=file, key=key, value=name,
                          expected="auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}", file=file, key=key, value=name,
                          expected="auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but no CUDA device is available (use device: auto or cpu)",
                          file=file, key=key, value=name, expected="auto or cpu")
    return device


def _path(value: Any, base_dir: Path | None, file: Any, key: str, what: str) -> Path:
    """The regular file ``value`` names (relative to ``base_dir``); a FIFO or device is refused, not opened."""
    path = path_from_text(value, base_dir=base_dir, file=file, key=key, what=what)
    check_regular_file(path, what=what, file=file, key=key)
    return path


def load_label_map(path: Path, *, file: Any = None, key: str = "inference.label_map") -> list[str]:
    """Class names from a JSON list (or an ``{index: name}`` mapping covering 0..N-1)."""
    data = read_json(Path(path), what="label map", file=file, key=key, expected="a JSON list of class names")
    if isinstance(data, dict):
        try:
            indexed = {int(k): v for k, v in data.items()}
        except ValueError:
            indexed = {}
        if sorted(indexed) == list(range(len(indexed))) and indexed:
            data = [indexed[i] for i in range(len(indexed))]
    if not isinstance(data, list) or not data or not all(isinstance(n, str) for n in data):
        raise ConfigError(f"label map {path} must be a non-empty JSON list of class names", file=file,
                          key=key, value=str(path), expected='["class 0", "class 1", ...]')
    return data


def load_state_dict(path: Path, *, file: Any = None, key: str = "inference.weights") -> dict[str, torch.Tensor]:
    """A state dict from a local file, never unpickling arbitrary objects."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, TypeError, KeyError, IndexError) as exc:
        hint = ""
        if zipfile.is_zipfile(path):
            with contextlib.suppress(Exception), zipfile.ZipFile(path) as zf:
                if any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist()):
                    hint = " (it looks like a TorchScript archive: give it as torchscript: instead)"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"weights file {path} is not a readable torch state dict{hint}: {first}",
                          file=file, key=key, value=str(path),
                          expected="a file written by torch.save(model.state_dict(), path)") from None
    if isinstance(data, Mapping) and not _is_state_dict(data):
        for name in _CHECKPOINT_KEYS:
            if isinstance(data.get(name), Mapping) and _is_state_dict(data[name]):
                data = data[name]
                break
    if not isinstance(data, Mapping) or not _is_state_dict(data) or not data:
        found = sorted(map(str, data))[:8] if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(f"weights file {path} holds no state dict (found {found})", file=file, key=key,
                          value=str(path), expected="a state dict, or a checkpoint with a 'state_dict' or 'model' entry")
    state = dict(data)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_state_dict(data: Mapping) -> bool:
    return all(isinstance(k, str) for k in data) and all(isinstance(v, torch.Tensor) for v in data.values())


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, *, strict: bool = True,
                     file: Any = None, key: str = "inference.weights") -> None:
    """Load ``state`` into ``model``; a key or shape mismatch names a few of the offending keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_few(shapes)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {_few(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
    if problems:
        raise ConfigError(f"weights file {path} does not fit the model: " + "; ".join(problems)
                          + (" (num_classes or the architecture may differ)" if shapes else ""),
                          file=file, key=key, value=str(path), expected="a state dict of this architecture")
    model.load_state_dict(state, strict=strict)


def _few(keys: Sequence[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def _check_no_download(args: Mapping[str, Any], file: Any, key: str) -> None:
    for name in _DOWNLOAD_ARGS:
        if args.get(name):
            raise ConfigError(f"{name}: true would download weights, which is impossible offline; build the "
                              "architecture untrained and give 'weights:' the path of a local state dict "
                              "(e.g. torch.save(model.state_dict(), 'resnet18.pth') on a connected machine)",
                              file=file, key=f"{key}.args.{name}", value=args[name],
                              expected="false, with inference.weights: a local file")
    for name in ("weights", "weights_backbone"):
        if args.get(name) is not None:
            raise ConfigError(f"args.{name} names downloadable weights; threedb loads weights from a local file "
                              "only: remove it and set inference.weights to a state-dict path",
                              file=file, key=f"{key}.args.{name}", value=args[name],
                              expected="inference.weights: a local file")


# --------------------------------------------------------------------------- loading

def load_model(spec: Mapping[str, Any], *, base_dir: str | Path | None = None, file: Any = None,
               key: str = "inference", device: str | torch.device | None = None,
               check_output: bool = True) -> LoadedModel:
    """The model an ``inference`` mapping describes (see the module docstring), ready to run.

    ``device`` overrides ``spec['device']``. With ``check_output`` a dummy batch is run once to
    compare the output with the label map's class count and ``output_shape``.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError("inference must be a mapping", file=file, key=key, value=spec)
    unknown = sorted(set(spec) - INFERENCE_KEYS)
    if unknown:
        raise ConfigError(f"unknown inference keys {unknown}", file=file, key=f"{key}.{unknown[0]}",
                          value=spec[unknown[0]], expected=f"one of {sorted(INFERENCE_KEYS)}")
    sources = [k for k in SOURCE_KEYS if spec.get(k) is not None]
    if len(sources) != 1:
        raise ConfigError(f"name the model with exactly one of {list(SOURCE_KEYS)} (found {sources or 'none'})",
                          file=file, key=key, value=sources, expected="torchvision: NAME, module: + class:, "
                          "file: + class:, torchscript: FILE or onnx: FILE")
    source = sources[0]
    base = Path(base_dir) if base_dir is not None else (Path(file).parent if file else None)
    dev = device if isinstance(device, torch.device) else resolve_device(
        device if device is not None else spec.get("device", "auto"), file=file, key=f"{key}.device")
    args = spec.get("args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError("args must be a mapping of keyword arguments", file=file, key=f"{key}.args",
                          value=args, expected="{name: value}")
    args = dict(args)
    for name in ("strict", "channels_last"):
        if name in spec and not isinstance(spec[name], bool):
            raise ConfigError(f"{name} must be true or false", file=file, key=f"{key}.{name}", value=spec[name])
    precision = spec.get("precision", "auto")
    if precision != "auto" and precision not in PRECISIONS:
        raise ConfigError("unknown precision", file=file, key=f"{key}.precision", value=precision,
                          expected="auto, fp32, fp16 or bf16")
    batch_size = spec.get("batch_size")
    if batch_size is not None and not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0):
        raise ConfigError("batch_size must be a positive integer", file=file, key=f"{key}.batch_size", value=batch_size)
    if "weights" in spec and source in ("torchscript", "onnx"):
        raise ConfigError(f"weights: does not apply to a {source} file (it holds its weights)",
                          file=file, key=f"{key}.weights", value=spec["weights"])

    default_res = None
    if source == "onnx":
        path = _path(spec["onnx"], base, file, f"{key}.onnx", "ONNX model file")
        try:
            model: Any = OnnxModel(path, dev)
        except ImportError:
            raise ConfigError("onnx: needs the onnxruntime package (pip install onnxruntime)", file=file,
                              key=f"{key}.onnx", value=str(spec["onnx"])) from None
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"ONNX file {path} cannot be loaded: {str(exc).strip()[:300]}", file=file,
                              key=f"{key}.onnx", value=str(spec["onnx"]), expected="a valid .onnx model") from None
        default_res = model.input_resolution()
        label = str(path)
    elif source == "torchscript":
        path = _path(spec["torchscript"], base, file, f"{key}.torchscript", "TorchScript file")
        try:
            model = torch.jit.load(str(path), map_location=dev)
        except Exception as exc:  # torch.jit raises RuntimeError and friends
            raise ConfigError(f"TorchScript file {path} cannot be loaded: {str(exc).strip().splitlines()[0][:300]}",
                              file=file, key=f"{key}.torchscript", value=str(spec["torchscript"]),
                              expected="a file written by torch.jit.save") from None
        model.eval()
        label = str(path)
    else:
        model, label = _build_module(source, spec, args, base, file, key)
        if spec.get("weights") is not None:
            wpath = _path(spec["weights"], base, file, f"{key}.weights", "weights file")
            state = load_state_dict(wpath, file=file, key=f"{key}.weights")
            apply_state_dict(model, state, wpath, strict=spec.get("strict", True), file=file, key=f"{key}.weights")
        model.eval()
        channels_last = spec.get("channels_last", dev.type == "cuda")
        model = model.to(dev, memory_format=torch.channels_last) if channels_last else model.to(dev)

    preprocess = parse_preprocess(spec, file=file, key=key, default_resolution=default_res)
    class_names = None
    if spec.get("label_map") is not None:
        lpath = _path(spec["label_map"], base, file, f"{key}.label_map", "label map")
        class_names = load_label_map(lpath, file=file, key=f"{key}.label_map")

    autocast = None
    if dev.type == "cuda" and source not in ("onnx", "torchscript"):
        autocast = PRECISIONS["fp16"] if precision == "auto" else PRECISIONS[precision]
    elif precision in ("fp16", "bf16") and source not in ("onnx", "torchscript"):
        autocast = PRECISIONS[precision] if precision == "bf16" else None  # CPU has no fast fp16 autocast
    loaded = LoadedModel(model, preprocess, dev, source, label, class_names, autocast,
                         channels_last=source not in ("onnx", "torchscript") and spec.get("channels_last", dev.type == "cuda"),
                         batch_size=batch_size, spec=dict(spec))
    if check_output and (class_names is not None or spec.get("output_shape") is not None):
        check_outputs(loaded, file=file, key=key)
    return loaded


def _build_module(source: str, spec: Mapping[str, Any], args: dict[str, Any], base: Path | None,
                  file: Any, key: str) -> tuple[nn.Module, str]:
    _check_no_download(args, file, key)
    if spec.get("num_classes") is not None:
        n = spec["num_classes"]
        if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
            raise ConfigError("num_classes must be a positive integer", file=file, key=f"{key}.num_classes", value=n)
        args["num_classes"] = n
    if source == "torchvision":
        import torchvision.models as tvm

        name = spec["torchvision"]
        try:
            builder = tvm.get_model_builder(str(name).lower())
        except (ValueError, KeyError):
            raise ConfigError(f"torchvision has no model {name!r}", file=file, key=f"{key}.torchvision",
                              value=name, expected="a name from torchvision.models.list_models()") from None
        factory, label, ckey = builder, f"torchvision.models.{name}", f"{key}.torchvision"
    else:
        cls_name = spec.get("class")
        if source == "module":
            target = str(spec["module"])
            if ":" in target and cls_name is None:
                target, cls_name = target.split(":", 1)
            ckey = f"{key}.module"
            try:
                import importlib
                module = importlib.import_module(target)
            except ImportError as exc:
                raise ConfigError(f"cannot import module {target!r}: {exc}", file=file, key=ckey,
                                  value=target, expected="an importable module") from None
        else:
            path = _path(spec["file"], base, file, f"{key}.file", "model source file")
            target, ckey = str(path), f"{key}.file"
            try:
                module = load_file_module(path)
            except Exception as exc:
                raise ConfigError(f"cannot import {path}: {type(exc).__name__}: {exc}", file=file, key=ckey,
                                  value=str(spec["file"])) from None
        if not cls_name:
            raise ConfigError(f"{source}: needs class: (the model class or factory in it)", file=file,
                              key=f"{key}.class", value=None, expected="a class or function name")
        factory = getattr(module, str(cls_name), None)
        if not callable(factory):
            raise ConfigError(f"{target} has no class or function {cls_name!r}", file=file,
                              key=f"{key}.class", value=cls_name, expected="a name defined in the module")
        label = f"{target}:{cls_name}"
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "weights" in params:
        # torchvision >= 0.13 builders take weights=None instead of the old pretrained=False (the form the
        # refusal of pretrained: true suggests, and the original 3DB's configs use): drop the old flag
        for old in _DOWNLOAD_ARGS:
            if old not in params and args.get(old) is False:
                del args[old]
    if "weights" in params and "weights" not in args:
        args["weights"] = None  # never a download
    if "weights_backbone" in params and "weights_backbone" not in args:
        args["weights_backbone"] = None
    try:
        model = factory(**args)
    except TypeError as exc:
        raise ConfigError(f"{label} does not accept these arguments: {exc}", file=file, key=f"{key}.args",
                          value={k: v for k, v in args.items() if v is not None}) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{label} returned a {type(model).__name__}, not a torch.nn.Module", file=file,
                          key=ckey, value=label)
    return model, label


def check_outputs(loaded: LoadedModel, *, file: Any = None, key: str = "inference") -> Any:
    """Run one blank image; the output must fit the label map's class count and ``output_shape``."""
    h, w = loaded.preprocess.resolution or (224, 224)
    try:
        out = loaded.predict(torch.zeros(1, h, w, 3, dtype=torch.uint8))
    except Exception as exc:
        raise ModelError(f"{loaded.source}: running the model on a {h}x{w} image failed: "
                         f"{type(exc).__name__}: {str(exc).strip()[:300]}") from None
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if isinstance(out, Mapping) and isinstance(out.get("out"), torch.Tensor):
        out = out["out"]  # torchvision segmentation models
    if not isinstance(out, torch.Tensor):
        return out  # detection models return lists of dicts: nothing to check here
    expected = loaded.spec.get("output_shape")
    if expected is not None and list(out.shape[1:]) != list(expected if isinstance(expected, (list, tuple)) else [expected]):
        raise ConfigError(f"model {loaded.source} outputs shape {list(out.shape[1:])} per image, not {expected}",
                          file=file, key=f"{key}.output_shape", value=expected, expected=str(list(out.shape[1:])))
    if loaded.class_names is not None and out.ndim >= 2 and out.shape[1] != len(loaded.class_names):
        raise ConfigError(f"model {loaded.source} outputs {out.shape[1]} classes but the label map "
                          f"{loaded.spec.get('label_map')} lists {len(loaded.class_names)} names",
                          file=file, key=f"{key}.label_map", value=loaded.spec.get("label_map"),
                          expected=f"a label map of {out.shape[1]} names")
    return out
