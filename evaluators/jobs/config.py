"""Loading a robustness job's YAML config: the loader of every threedb config, then a pydantic schema.

``base_config:`` chains, paths relative to the file that wrote them, ``--set KEY=VALUE`` overrides and
one :class:`~threedb.sim.errors.ConfigError` naming the file and key (``threat.eps``,
``attacks[2].steps``) for the first problem, before any work starts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Mapping, TypeVar

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from threedb.sim.config.loader import (KeyPath, Provenance, apply_overrides, format_key, load_chain, parse_key,
                                       resolve_paths)
from threedb.sim.config.schema import config_error_from_validation
from threedb.sim.errors import ConfigError

S = TypeVar("S", bound=BaseModel)

#: Path keys of the model section every job shares (an ``inference:`` mapping, or ``card:``).
MODEL_PATH_KEYS: tuple[KeyPath, ...] = (("model", "card"), ("model", "weights"), ("model", "file"),
                                        ("model", "label_map"), ("model", "torchscript"), ("model", "onnx"))


class DataConfig(BaseModel):
    """The ``data:`` section of a dataset-consuming job: an image-folder dataset (``threedb dataset``)."""

    model_config = ConfigDict(extra="forbid")
    root: str
    max_examples: Optional[int] = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    environments: Optional[list[str]] = None


class JobSchema(BaseModel):
    """The keys every robustness job's config has; a job's schema adds its own sections."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    device: str = "auto"
    title: Optional[str] = None
    model: dict[str, Any]
    data: DataConfig
    output: str


@dataclass
class JobConfig(Generic[S]):
    """A validated job config: the schema, the merged path-resolved mapping, and where each key came from."""

    source: Path                  #: the config file given on the command line
    schema: S
    resolved: dict[str, Any]      #: the validated config as plain data (written as config.resolved.yaml)
    provenance: Provenance

    def error(self, key: str | KeyPath, message: str, **kwargs: Any) -> ConfigError:
        """A ConfigError for ``key`` (``"attacks[2].steps"`` or a key path) naming the file that wrote it."""
        path = parse_key(key) if isinstance(key, str) else tuple(key)
        return self.provenance.error(path, message, **kwargs)

    def file_of(self, key: str | KeyPath) -> str | None:
        """The file (or ``<command line>``) that wrote ``key``."""
        return self.provenance.file_of(parse_key(key) if isinstance(key, str) else tuple(key))


def load_job_config(path: str | Path, schema: type[S], *, path_keys: tuple[KeyPath, ...] = (),
                    overrides: Mapping[str, Any] | None = None) -> JobConfig[S]:
    """Load ``path`` (with its ``base_config`` chain), apply ``overrides``, resolve ``path_keys``, validate."""
    sections = frozenset(name for key, field in schema.model_fields.items() for name in (key, field.alias) if name)
    loaded = load_chain(path, sections=sections)
    data, prov = loaded.data, loaded.provenance
    if overrides:
        apply_overrides(data, prov, overrides)
    resolve_paths(data, prov, path_keys)
    try:
        validated = schema.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, prov, data, schema) from None
    return JobConfig(source=loaded.files[-1], schema=validated, resolved=validated.model_dump(mode="json", by_alias=True),
                     provenance=prov)


def config_digest(resolved: Mapping[str, Any], *, ignore: tuple[str, ...] = ("output",)) -> str:
    """``sha256:<hex>`` of the resolved config without the ``ignore`` top-level keys (where it writes)."""
    kept = {k: v for k, v in resolved.items() if k not in ignore}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def model_spec(model: Mapping[str, Any], config: JobConfig, key: str = "model") -> tuple[dict[str, Any], Path]:
    """``(inference mapping, base directory of its relative paths)`` of a job's ``model:`` section.

    ``model: {card: path/to/card.json}`` takes the card's ``inference`` mapping (paths relative to the
    card); any other keys beside ``card`` override the card's (e.g. ``device``). Without ``card`` the
    section is an ``inference:`` mapping itself (paths already resolved against the config file).
    """
    spec = dict(model)
    card_path = spec.pop("card", None)
    if card_path is None:
        return spec, config.source.parent
    card_file = Path(str(card_path))
    try:
        card = json.loads(card_file.read_text())
    except FileNotFoundError:
        raise config.error(f"{key}.card", f"model card not found: {card_file}", value=str(card_path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise config.error(f"{key}.card", f"model card {card_file} is not readable JSON: {exc}",
                           value=str(card_path)) from None
    inference = card.get("inference") if isinstance(card, dict) else None
    if not isinstance(inference, dict):
        raise config.error(f"{key}.card", f"model card {card_file} has no 'inference' mapping",
                           value=str(card_path), expected="a card.json written by threedb train")
    return {**inference, **spec}, card_file.parent


__all__ = ["DataConfig", "JobConfig", "JobSchema", "MODEL_PATH_KEYS", "config_digest", "format_key", "load_job_config", "model_spec"]
